"""The marketplace's catalog (strategies, datasets, models with owners) and subscriptions."""
