# Concilium: `make demo` runs the main demo, `make test` installs everything and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# browser tests: Debian's Chromium and ChromeDriver, axe-core from npm (never fetched at test time)
BROWSER := $(VENV)/.browser
WEB_TOOLS := $(VENV)/web-tools
AXE_CORE := 4.14.1

.PHONY: demo demo-banks demo-four test test-full lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# apt-get as root, through sudo otherwise; npm itself from Debian if the machine has none
$(BROWSER): Makefile | $(BIN)/python
	@need=""; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v chromedriver >/dev/null || need="$$need chromium-driver"; \
	command -v npm >/dev/null || need="$$need npm"; \
	if [ -n "$$need" ]; then \
	  sudo=""; \
	  if [ "$$(id -u)" != 0 ]; then \
	    sudo=$$(command -v sudo) || { echo "browser tests need Debian packages:$$need" \
	      "(apt-get install --no-install-recommends$$need)" >&2; exit 1; }; \
	  fi; \
	  echo "installing$$need"; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends $$need; \
	fi
	npm install --prefix $(WEB_TOOLS) --no-audit --no-fund --save-exact --silent axe-core@$(AXE_CORE)
	touch $@

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
test: $(STAMP) $(BROWSER) lint typecheck
	$(BIN)/python -m pytest -n 2 --dist worksteal

# every generic test on every protocol variant (additive on 3 parties at the query level too)
test-full: $(STAMP) $(BROWSER) lint typecheck
	CONCILIUM_SUITE=full $(BIN)/python -m pytest -n 2 --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/engine.py --json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
