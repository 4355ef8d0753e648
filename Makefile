# quant-lakehouse: setup-free entry points. Each target creates .venv when missing.
#   make flow-production   data cycle (catching up history) then alpha cycle, newest complete day
#   make test              the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DVC_ENV := $(VENV)/tools/dvc
DVC := $(DVC_ENV)/bin/dvc
# The one place DVC's version is chosen (the tests build the tool with `make dvc-tool` too).
# With the S3 plugin: QUANT_DVC_REMOTE=s3://... (an older tool env without it: rm -rf .venv/tools/dvc).
DVC_REQUIREMENT := dvc[s3]>=3.50,<4
MLFLOW_PORT ?= 5000

# Telemetry off for every command started from here (MLflow ignores DO_NOT_TRACK=1).
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export MPLBACKEND := Agg
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS := 1
export DAGSTER_EVENT_BATCH_SIZE := 1000

.PHONY: setup flow-production flow-data backfill data-repair data-audit ui mlflow-ui test lint bench dvc-tool clean-data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# DVC lives in its own environment: in the project's, its hydra-core pins antlr4 4.9,
# which breaks Dagster's asset-selection parser (it needs 4.13).
$(DVC):
	$(PYTHON) -m venv $(DVC_ENV)
	$(DVC_ENV)/bin/python -m pip install --quiet --upgrade pip
	$(DVC_ENV)/bin/python -m pip install --quiet '$(DVC_REQUIREMENT)'

dvc-tool: $(DVC)

# When dvc.lock records a lakehouse version, the DVC tool is installed; Dagster does the
# pull: `lakehouse_restore`, the data job's first step, restores the recorded version when
# the lakehouse (of this checkout) is missing or behind it. `quant pull` does it by hand.
flow-production: setup
	@if grep -qs 'path: data/lakehouse' dvc.lock; then $(MAKE) --no-print-directory dvc-tool; fi
	$(BIN)/quant production $(if $(DATE),--date $(DATE))

flow-data: setup
	$(BIN)/quant data $(if $(DATE),--date $(DATE))

backfill: setup
	@test -n "$(START)" -a -n "$(END)" || { echo "usage: make backfill START=YYYY-MM-DD END=YYYY-MM-DD"; exit 2; }
	$(BIN)/quant backfill --start $(START) --end $(END)

data-repair: setup
	$(BIN)/quant repair

data-audit: setup
	$(BIN)/quant audit

ui: setup
	$(BIN)/quant ui

# The MLflow UI over data/mlflow (QUANT_DATA_DIR/mlflow) on 127.0.0.1:$(MLFLOW_PORT). The server
# runs in a session of its own under `quant mlflow-ui`: Ctrl-C, or a plain `kill PID` of make
# or of quant, stops it and every process it started.
mlflow-ui: setup
	exec env --default-signal=INT,TERM $(BIN)/quant mlflow-ui --host 127.0.0.1 --port $(MLFLOW_PORT)

# The browser tests (tests/test_ui.py, tests/test_mlflow_ui.py) drive Debian's Chromium at
# this path through Playwright (no browser download). Without it they fail on CI (.ci/run
# installs it, so missing there is a broken setup) and skip elsewhere, so that the rest of
# the suite still runs on a machine without apt: `make test` then prints the warning below
# before and after the run, and pytest lists each skip with its reason (-ra).
CHROMIUM := /usr/bin/chromium
CHROMIUM_MISSING := WARNING: $(CHROMIUM) is missing: the browser tests (Dagster UI, MLflow UI) are SKIPPED, not passed; apt-get install -y chromium

test: setup
	@test -x $(CHROMIUM) || echo "$(CHROMIUM_MISSING)" >&2
	@status=0; $(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) || status=$$?; \
	  test -x $(CHROMIUM) || echo "$(CHROMIUM_MISSING)" >&2; exit $$status

lint: setup
	$(BIN)/ruff check quant_assets quant_resources tests benchmarks

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_optimizer.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_tracking.py
	$(BIN)/python benchmarks/bench_ingest.py
