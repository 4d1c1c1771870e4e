"""The default instrument universe of the local exchange and the normalizer, with start prices."""

START_PRICES: dict[str, float] = {
    "BTCUSDT": 65000.0,
    "ETHUSDT": 3200.0,
    "SOLUSDT": 150.0,
    "BNBUSDT": 580.0,
    "XRPUSDT": 0.52,
    "ADAUSDT": 0.45,
    "DOGEUSDT": 0.12,
    "AVAXUSDT": 35.0,
    "LINKUSDT": 14.0,
    "DOTUSDT": 7.0,
}

DEFAULT_SYMBOLS: list[str] = list(START_PRICES)
