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

# Telemetry off for every command started from here (MLflow ignores DO_NOT_TRACK=1).
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export MPLBACKEND := Agg
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS := 1

.PHONY: setup flow-production flow-data backfill data-repair data-audit ui test lint bench dvc-tool clean-data

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
	$(DVC_ENV)/bin/python -m pip install --quiet 'dvc>=3.50,<4'

dvc-tool: $(DVC)

flow-production: setup
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

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check quant_assets quant_resources tests benchmarks

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_ingest.py
