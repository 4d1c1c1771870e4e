"""tradeops backend: everything that runs headless (no textual imports here)."""

__version__ = "0.1.0"
