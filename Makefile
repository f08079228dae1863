# The two commands of the README: `make demo` and `make test`. Both build their own venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-quick test venv generate check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelmon stack up --config modelmon.yaml

demo-quick: $(STAMP)
	$(BIN)/modelmon stack up --config modelmon.yaml --quick

test: $(STAMP)
	$(BIN)/python -m pytest

generate: $(STAMP)
	$(BIN)/modelmon generate --config modelmon.yaml

check: $(STAMP)
	$(BIN)/modelmon generate --config modelmon.yaml --check

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
