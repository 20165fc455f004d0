# Two entry points for a new user: `make demo` and `make test`. Both create `.venv` on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean docs

$(STAMP): pyproject.toml examples/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]" -r examples/requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

# Skips the slow version-matrix, wheel and benchmark-harness tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not compat and not packaging and not bench" $(PYTEST_ARGS)

docs: $(STAMP)
	$(BIN)/raptorflow-otel settings --markdown > docs/settings.md

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
