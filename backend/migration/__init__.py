"""The migration control plane's data: inventory, dependency order, migration state."""
