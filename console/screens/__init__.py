"""The seven screens. Each is thin: it composes widgets and turns a Snapshot into their values."""
