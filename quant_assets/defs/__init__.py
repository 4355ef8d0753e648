"""The asset graph, one folder per domain, loaded whole by `quant_assets.definitions`
(`dg.load_defs`): module-level assets (checks declared on them), jobs, schedules and the
sensor. Nothing but the definitions imports this package; its modules import the pure
core (`quant_assets.data`, `.features`, `.alpha`) and the resources.

Shared attributes (owners, code version) and the settings a definition depends on (the
partitions' start date, thresholds named in descriptions) are applied once, by mapping
over the specs in `quant_assets.definitions.bind`.
"""
