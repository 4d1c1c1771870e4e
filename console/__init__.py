"""The tradeops console (Textual app) and CLI. Textual is imported only where the app runs."""
