# Two commands: `make run` (demo end to end) and `make test` (the whole suite). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := .musicrec/demo
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: venv test test-fast run server clean lint

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow and not e2e"

lint: venv
	$(VENV)/bin/ruff check musicrec flows tasks tests benchmarks

run: venv
	$(VENV)/bin/musicrec sample-data $(DEMO)/data --scale small
	$(VENV)/bin/musicrec train --reviews $(DEMO)/data/reviews.json.gz --meta $(DEMO)/data/meta.json.gz --report $(DEMO)/report.json

server: venv
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

clean:
	rm -rf $(VENV) .musicrec .pytest_cache
