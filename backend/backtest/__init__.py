"""Backtests: strategies (signals -> target positions) run over stored prices with pandas."""
