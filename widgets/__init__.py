"""Reusable Textual widgets. They take plain values and know nothing of Redis."""
