"""Alpha cycle (group `alpha`): snapshot -> returns -> selection -> weights -> backtest.

Lakehouse data arrives only as inputs loaded by `ReadOnlyLakehouseIOManager`; every
output goes through `RunArtifactIOManager` into `data/runs/{run_id}/`. No asset here asks
for the read-write lakehouse or a market-data source, so the cycle runs offline. Each
stage appends its line, and each contract validation its own, to `audit.jsonl`.
"""
