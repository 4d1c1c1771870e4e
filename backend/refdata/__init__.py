"""Reference data: the instrument master."""
