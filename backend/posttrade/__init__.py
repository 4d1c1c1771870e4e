"""Post-trade: positions and PnL from fills, marked to market."""
