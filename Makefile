# Developer commands for django-synerise. `make demo` runs the example project,
# `make test` runs the whole suite. Both work from a fresh clone.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

# The suite needs real services; these are the defaults of a development machine. The demo
# needs neither (SQLite and a filesystem broker) unless you set them yourself.
test test-fast stress bench tox: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
test test-fast stress bench tox: export CELERY_BROKER_URL ?= redis://127.0.0.1:6379/5

# Rounds of `make stress`: every timing test runs this many times.
STRESS_ROUNDS ?= 30
# Rounds of `make stress` run at the same time (each on its own test and Redis database).
STRESS_LANES ?= 1

.PHONY: help install test test-fast stress lint typecheck format docs schema screenshots bench demo tox clean

help:
	@echo "make demo   - run the example project (fake Synerise, Django, Celery worker + beat)"
	@echo "make test   - install, lint and run the whole test suite"
	@echo "make stress - run the timing tests (-m timing) STRESS_ROUNDS times (30) with a core busy"
	@echo "make lint   - ruff check, format check and mypy (the pre-commit hooks)"
	@echo "make typecheck - mypy (strict, django-stubs) on the package"
	@echo "make docs   - build the Sphinx docs with warnings as errors"
	@echo "make schema - write the OpenAPI schema to docs/_static/openapi.yaml"
	@echo "make screenshots - rewrite the docs' screenshots (runs the browser tests)"
	@echo "make bench  - run the benchmarks"
	@echo "make tox    - run the tox matrix"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[celery,openapi]" --group test --group docs
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[celery,openapi]"
	touch $(DEMO_STAMP)

install: $(STAMP)

test: install
	scripts/ensure-chromium
	$(BIN)/ruff check .
	$(BIN)/python scripts/test_lanes.py

test-fast: install
	$(BIN)/pytest -m "not celery and not browser and not slow"

stress: install
	scripts/ensure-chromium
	$(BIN)/python scripts/stress.py --rounds $(STRESS_ROUNDS) --lanes $(STRESS_LANES)

lint: install
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

# Strict mypy on django_synerise/ ([tool.mypy] in pyproject.toml). The Django plugin imports
# tests.settings, which needs no service.
typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format django_synerise

docs: install
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

schema: install
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m django_synerise.api --file docs/_static/openapi.yaml

screenshots: install
	scripts/ensure-chromium
	UPDATE_SCREENSHOTS=1 $(BIN)/pytest -m browser tests/browser

bench: install
	$(BIN)/python benchmarks/refresh_throughput.py
	DATABASE_URL= $(BIN)/python benchmarks/api_overhead.py
	$(BIN)/python benchmarks/api_overhead.py
	$(BIN)/python benchmarks/statements.py

demo: $(DEMO_STAMP)
	$(BIN)/python scripts/demo.py

# tox's discovery does not follow pyenv shims: hand it every pyenv CPython 3.1x directly.
PYENV_PYTHONS := $(foreach v,$(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.1[0-9]\.'),$(shell pyenv root)/versions/$(v)/bin/python$(basename $(v)))

tox: install
	$(BIN)/pip install --quiet "tox>=4.22"
	$(BIN)/tox $(if $(PYENV_PYTHONS),--discover $(PYENV_PYTHONS))

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache docs/_build example_project/var
