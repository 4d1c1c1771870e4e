"""Reports built from the stores and streams (pure backend: the scheduler writes them)."""
