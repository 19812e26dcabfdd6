# Two commands for a newcomer: `make run` and `make test`. Both set up .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Each stamp records an install; it is redone when what it installs from changes.
SERVE_STAMP := $(VENV)/.serve-installed
DEV_STAMP := $(VENV)/.dev-installed
TORCH_STAMP := $(VENV)/.torch-installed
# torch for the autograd cross-check of the policy losses (tests/core/test_autograd.py),
# pinned: an unpinned torch would download gigabytes of GPU wheels. Only `make test`
# installs it (30 to 45 s the first time); elsewhere those tests are skipped, saying why.
TORCH_REQUIREMENT := torch==2.13.0
# Ray Serve for app/ray_serve.py and its tests (tests/system/test_ray_serve*.py): the extra
# `.[ray]`, pinned in pyproject.toml. `make test` installs it (about 50 s and 240 MB the
# first time), and `make typecheck`, since mypy reads Ray's types; elsewhere those tests
# are skipped, saying why.
RAY_STAMP := $(VENV)/.ray-installed
APP_SOURCES := $(shell find app -name '*.py' -o -name 'py.typed')
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

SOAK_ARGS ?=

.PHONY: run test test-fast bench load soak shutdown demo check lint typecheck layers format clean

run: $(SERVE_STAMP)
	@echo "serving on http://127.0.0.1:$(PORT) (docs at /docs; Ctrl-C stops)"
	HOST=127.0.0.1 PORT=$(PORT) $(BIN)/python -m app

test: check $(DEV_STAMP) $(SERVE_STAMP) $(TORCH_STAMP) $(RAY_STAMP)
	$(BIN)/python -m pytest

# The inner loop: every test but those marked slow (real servers, subprocesses, fuzzing).
test-fast: $(DEV_STAMP) $(SERVE_STAMP)
	$(BIN)/python -m pytest -m "not slow"

# tests/deploy render deploy/k8s with `kubectl kustomize` (kustomize 5 or later). The machine
# image ships kubectl; where it is missing, apt-get installs the package `kubectl` (as root,
# from an apt source that offers it: Debian 12's own kubernetes-client is too old).
.PHONY: kubectl
test test-fast: kubectl
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
		echo "kubectl is missing: installing it with apt-get"; \
		apt-get update -qq && apt-get install -y -qq kubectl; }

# Service vs baseline vs floor over loopback HTTP; prints a table (about a minute).
bench: $(DEV_STAMP) $(SERVE_STAMP)
	$(BIN)/python -m benchmarks.run

# Proofs against a live server on loopback; each prints its numbers and fails on a miss.
load: $(DEV_STAMP) $(SERVE_STAMP)
	$(BIN)/python -m scripts.load

soak: $(DEV_STAMP) $(SERVE_STAMP)
	$(BIN)/python -m scripts.soak $(SOAK_ARGS)

shutdown: $(DEV_STAMP) $(SERVE_STAMP)
	$(BIN)/python -m scripts.shutdown --workers 1
	$(BIN)/python -m scripts.shutdown --workers 2

check: lint typecheck layers

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP) $(SERVE_STAMP) $(RAY_STAMP)
	$(BIN)/mypy

# The layering of app/ as a checked contract (pyproject.toml, [tool.importlinter]).
layers: $(DEV_STAMP)
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(VENV)/bin/python:
	@echo "creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

# What serving needs: the service's runtime dependencies, and the service itself as the
# package rlhf_update_server (the client's --in-process modes import it by that name).
$(SERVE_STAMP): pyproject.toml $(APP_SOURCES) | $(VENV)/bin/python
	@echo "installing the service and what it needs to serve into $(VENV) (the first time: about a minute)"
	$(PIP) .
	touch $@

# What the tests need on top: the client (editable, with its extras) and the tools.
$(DEV_STAMP): pyproject.toml client/pyproject.toml | $(VENV)/bin/python
	@echo "installing the client and the development tools into $(VENV)"
	$(PIP) -e './client[binary,cli,demo]' '.[dev]'
	touch $@

$(TORCH_STAMP): Makefile | $(VENV)/bin/python
	@echo "installing $(TORCH_REQUIREMENT) into $(VENV) for the autograd tests"
	$(PIP) '$(TORCH_REQUIREMENT)'
	touch $@

# The extra with the service (built again, the same sources); after the serve stamp.
$(RAY_STAMP): pyproject.toml | $(SERVE_STAMP)
	@echo "installing the extra [ray] (Ray Serve) into $(VENV) for the Ray Serve tests"
	$(PIP) '.[ray]'
	touch $@

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis .import_linter_cache

# The end-to-end demo against the service in this process: docs/demo.png and docs/demo.csv.
demo: $(DEV_STAMP) $(SERVE_STAMP)
	mkdir -p docs
	$(BIN)/rlhf-update demo --in-process --png docs/demo.png --csv docs/demo.csv
