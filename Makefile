# The two commands of the README: `make demo` and `make test`. Both build their own venv.
#
# ARGS passes flags through to `modelmon stack up` (see `modelmon stack up --help`), e.g.
#   make demo ARGS="--port prometheus=19090 --port grafana=13000"   # choose listen ports
#   make demo-quick ARGS="--no-grafana --workdir /tmp/mm-stack"
#   make demo ARGS="--rate 20 --schedule stable:60,covariate_drift:300"
#   make demo ARGS="--ingest stream"   # traffic through a Redis Stream (needs redis-server); or --ingest http
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo demo-quick test venv generate check compose-secrets bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/modelmon stack up --config modelmon.yaml $(ARGS)

demo-quick: $(STAMP)
	$(BIN)/modelmon stack up --config modelmon.yaml --quick $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

generate: $(STAMP)
	$(BIN)/modelmon generate --config modelmon.yaml

check: $(STAMP)
	$(BIN)/modelmon generate --config modelmon.yaml --check

# For `docker compose up`: each *_env secret of modelmon.yaml's receivers, from this environment,
# into ./secrets/NAME (0600), which compose mounts at /etc/alertmanager/secrets. The Alertmanager
# image runs as nobody (uid 65534): give it the folder with `sudo chown -R 65534 secrets`.
compose-secrets: $(STAMP)
	$(BIN)/python -m modelmon.stack.compose_secrets --config modelmon.yaml --dir secrets

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
