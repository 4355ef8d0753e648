"""The technical-indicator feature store, `tv_technicals_1d` (a Delta table)."""
