# Two commands for a fresh machine (Python 3.11, Node.js 20): `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run test lint bench loadtest infra-check deploy clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

install: $(VENV)/.installed node_modules/.installed

run: install
	$(PY) -m local.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	# Two workers, a test file each at a time: each worker starts its own Azurite and app host.
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

bench: install
	$(PY) -m bench --quick

infra-check: install
	$(PY) infra/check.py --doctor

# Needs az (signed in), func and python3, not the venv; docs/DEPLOYMENT.md.
deploy:
	infra/deploy.sh

clean:
	rm -rf $(VENV) .venv-checkov node_modules .azurite .mypy_cache .ruff_cache .pytest_cache
