# Fresh machine: `make demo` or `make test`. Both (re)build .venv when pyproject files change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hrmkit-installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: demo test test-all lint venv clean

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/hrmkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check hrmkit plugins tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache lightning_logs
