# Two commands for a newcomer: `make run` and `make test`. Both set up .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Reinstall when pyproject.toml changes; the stamp records the last install.
STAMP := $(VENV)/.installed

SOAK_ARGS ?=

.PHONY: run test bench load soak shutdown demo check lint typecheck format clean

run: $(STAMP)
	HOST=127.0.0.1 PORT=$(PORT) $(BIN)/python -m app

test: check
	$(BIN)/python -m pytest

# Service vs baseline vs floor over loopback HTTP; prints a table (about a minute).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Proofs against a live server on loopback; each prints its numbers and fails on a miss.
load: $(STAMP)
	$(BIN)/python -m scripts.load

soak: $(STAMP)
	$(BIN)/python -m scripts.soak $(SOAK_ARGS)

shutdown: $(STAMP)
	$(BIN)/python -m scripts.shutdown --workers 1
	$(BIN)/python -m scripts.shutdown --workers 2

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

# The end-to-end demo against the service in this process: docs/demo.png and docs/demo.csv.
demo: $(STAMP)
	mkdir -p docs
	$(BIN)/rlhf-update demo --in-process --png docs/demo.png --csv docs/demo.csv
