"""Validation gates: definitions (data), checks, runner, decisions, approvals, audit log."""
