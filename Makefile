# Two commands for a newcomer: `make run` and `make test`. Both set up .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Reinstall when pyproject.toml changes; the stamp records the last install.
STAMP := $(VENV)/.installed

.PHONY: run test bench check lint typecheck format clean

run: $(STAMP)
	HOST=127.0.0.1 PORT=$(PORT) $(BIN)/python -m app

test: check
	$(BIN)/python -m pytest

# Service vs baseline vs floor over loopback HTTP; prints a table (a few minutes).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

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
