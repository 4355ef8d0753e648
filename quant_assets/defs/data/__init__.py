"""Data cycle: `candidates` (discovery) then `ohlcv` (ingestion, with its checks)."""
