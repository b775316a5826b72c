# Concilium: `make demo` runs the main demo, `make test` installs everything and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-banks demo-four test test-full lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m concilium.demo

demo-banks: $(STAMP)
	$(BIN)/python -m concilium.demo_banks

demo-four: $(STAMP)
	$(BIN)/python -m concilium.demo_four

lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs

typecheck: $(STAMP)
	$(BIN)/mypy

# two workers (pytest-xdist): most tests are one process of party threads, bound to one core
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -n 2 --dist worksteal

# every generic test on every protocol variant (additive on 3 parties at the query level too)
test-full: $(STAMP) lint typecheck
	CONCILIUM_SUITE=full $(BIN)/python -m pytest -n 2 --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/engine.py --json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
