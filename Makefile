# One command for every routine job. `make run` and `make test` install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The SAM CLI lives in its own environment (its pins clash with ours), on the first Python
# 3.12+ that actually runs (`sam build` needs one for the python3.12 runtime; pyenv shims of
# inactive versions do not run), else on python3 (enough for `sam validate`).
SAM_PYTHON ?= $(shell for p in python3.12 python3.13 $(wildcard $(HOME)/.pyenv/versions/3.1[23]*/bin/python3); do \
	$$p -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 && { echo $$p; break; }; done)
ifeq ($(SAM_PYTHON),)
SAM_PYTHON := python3
endif
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system
# axe-core for the accessibility test, from the npm registry at the version package-lock.json pins.
NODE_STAMP := node_modules/.installed

.PHONY: run test test-browser lint bench load token sam-validate deps clean

$(STAMP): requirements-dev.txt layers/shared/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $@

$(SAM_STAMP): requirements-sam.txt
	$(SAM_PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-sam.txt
	touch $@

$(SYSTEM_STAMP): infra/install-system.sh | $(STAMP)
	bash infra/install-system.sh
	touch $@

$(NODE_STAMP): package.json package-lock.json | $(SYSTEM_STAMP)
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(STAMP) $(SAM_STAMP) $(SYSTEM_STAMP) $(NODE_STAMP)

test: deps
	SAM_CLI=$(abspath $(SAM_VENV))/bin/sam $(PY) -m pytest $(PYTEST_ARGS)

test-browser: deps
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

run: $(STAMP)
	$(PY) -m infra.local

bench: $(STAMP)
	$(PY) -m infra.bench $(BENCH_ARGS)

load: $(STAMP)
	$(PY) -m tests.support.local_stack --sessions $(or $(SESSIONS),3)

token: $(STAMP)
	@$(PY) -m infra.token $(if $(LEARNER),--learner $(LEARNER),) $(if $(ROLE),--role $(ROLE),)

sam-validate: $(SAM_STAMP)
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1

clean:
	rm -rf $(VENV) $(SAM_VENV) node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache
