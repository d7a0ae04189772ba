"""Pure math (numpy only): aggregation, metrics. No I/O, no torch."""
