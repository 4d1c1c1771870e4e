"""The built-in backtest strategies and their parameters, by name: what the CLI lists without
loading the engine (and pandas) at every start."""

STRATEGY_NAMES = ("buy-hold", "meanrev", "momentum")
PARAMS = {"window", "threshold", "quantity", "bar_s", "fee_bps", "capital"}
