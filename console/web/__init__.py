"""The console in a browser: `tradeops serve` (server.py) and its logins (users.py)."""
