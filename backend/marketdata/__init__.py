"""Market-data helpers shared by every service that reads ticks and bars."""
