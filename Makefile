# Fresh machine: `make demo` or `make test`. Both (re)build .venv when pyproject files change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hrmkit-installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: demo test test-all test-plugins lint venv clean

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/hrmkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) test-plugins
	$(BIN)/python -m pytest -q -m "slow or not slow"

# Each plugin's own tests (e.g. hrmkit's shared core suite run on its core); every plugins/*/pyproject.toml is
# installed editable into .venv by the stamp rule above, so a new plugin needs no Makefile change.
test-plugins: $(STAMP)
	$(BIN)/python -m pytest -q $(wildcard plugins/*/tests)

lint: $(STAMP)
	$(BIN)/ruff check hrmkit plugins tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache lightning_logs
