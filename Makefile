# Two commands for a fresh machine (Python 3.11, Node.js 20): `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install browser run test lint bench loadtest infra-check deploy clean screenshots

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

install: $(VENV)/.installed node_modules/.installed

# Chromium for the portal's browser tests (Debian's package), installed once where apt-get
# runs as root (CI); elsewhere the tests skip and say how to get it (README).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; }; } \
	  || echo "no Chromium: the portal's browser tests will skip"

run: install
	$(PY) -m local.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint browser
	# Two workers, a test file each at a time: each worker starts its own Azurite and app host.
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# Screenshots of each portal page, for the README (the browser tests write them).
screenshots: install browser
	PORTAL_SCREENSHOTS=docs/portal $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_portal_browser.py tests/test_portal_form.py tests/test_portal_views.py

bench: install
	$(PY) -m bench --quick

infra-check: install
	$(PY) infra/check.py --doctor

# Needs az (signed in), func and python3, not the venv; docs/DEPLOYMENT.md.
deploy:
	infra/deploy.sh

clean:
	rm -rf $(VENV) .venv-checkov node_modules .azurite .servicebus .mypy_cache .ruff_cache .pytest_cache
