"""The console's data layer: sources that read the bus (or a recording) into plain snapshots."""
