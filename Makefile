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

test: venv lint
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow and not e2e"

# Formatting, lint rules and import layers (pyproject.toml): part of `make test`, so CI fails on any of them.
LINTED := musicrec flows tasks tests benchmarks deployments
lint: venv
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/lint-imports

run: venv
	$(VENV)/bin/musicrec sample-data $(DEMO)/data --scale small
	$(VENV)/bin/musicrec train --reviews $(DEMO)/data/reviews.json.gz --meta $(DEMO)/data/meta.json.gz --report $(DEMO)/report.json
	$(VENV)/bin/musicrec score --all-users --top-n 10

server: venv
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

clean:
	rm -rf $(VENV) .musicrec .pytest_cache

# Deployments (docs/deployments.md). Both talk to the server of `make server` unless PREFECT_API_URL is set.
API_URL = $${PREFECT_API_URL:-http://127.0.0.1:4200/api}
.PHONY: serve worker

serve: venv
	PREFECT_API_URL=$(API_URL) $(PY) deployments/serve.py

worker: venv
	PREFECT_API_URL=$(API_URL) $(VENV)/bin/prefect work-pool inspect musicrec >/dev/null 2>&1 || \
	  PREFECT_API_URL=$(API_URL) $(VENV)/bin/prefect work-pool create musicrec --type process
	PREFECT_API_URL=$(API_URL) PWD=$(CURDIR) \
	  MUSICREC_REVIEWS=$${MUSICREC_REVIEWS:-$(CURDIR)/$(DEMO)/data/reviews.json.gz} \
	  MUSICREC_META=$${MUSICREC_META:-$(CURDIR)/$(DEMO)/data/meta.json.gz} \
	  MUSICREC_STORE_URI=$${MUSICREC_STORE_URI:-file://$(CURDIR)/.musicrec/store} \
	  MUSICREC_WORK_DIR=$${MUSICREC_WORK_DIR:-$(CURDIR)/.musicrec/work} \
	  MUSICREC_TIMEZONE=$${MUSICREC_TIMEZONE:-UTC} \
	  $(VENV)/bin/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
	PREFECT_API_URL=$(API_URL) $(VENV)/bin/prefect worker start --pool musicrec
