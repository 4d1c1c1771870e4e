"""The feature store: definitions as data, online (latest per symbol in Redis) and offline
(Parquet) stores, point-in-time retrieval."""
