# Instance Console. `make run`: the console with a demo instance on http://127.0.0.1:8000.
# `make test`: installs what the tests need, starts their services, runs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# --no-compile: Python writes the bytecode of the modules it imports on first use; compiling all of
# torch and transformers up front took 40 s of a fresh install on 2 cores, for a seventh of the files.
PIP_INSTALL := $(PY) -m pip install -q --no-compile

.PHONY: install run test lint format clean

$(VENV)/bin/python:
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || (apt-get update -qq && apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-deps: $(VENV)/bin/python requirements.txt inference/requirements.txt
	$(PIP_INSTALL) -r requirements.txt -r inference/requirements.txt
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-dev.txt
	$(PIP_INSTALL) -r requirements-dev.txt
	touch $@

install: $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap_demo
	$(PY) manage.py serve

# scripts/test.sh makes $(VENV)/.test-deps itself, beside the Debian packages it installs.
test:
	bash scripts/test.sh

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(VENV)/.test-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var/test
