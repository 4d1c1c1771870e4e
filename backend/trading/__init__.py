"""The trading path's logic (no I/O): order state machine, pre-trade risk rules, matching."""
