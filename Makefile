# Two commands matter:  `make demo`  and  `make test`  (see README).
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip
# constraints.txt pins every package to the set CI tests with; pyproject.toml holds the ranges.
INSTALL = $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint typecheck pytest test-slow serve clean help

help:
	@echo "make demo   - create $(VENV), install cspon-rs, run the end-to-end demo on data_samples/"
	@echo "make test   - install the test extras, then ruff, mypy and the test suite (what CI runs)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade "pip>=24"

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(INSTALL) -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(INSTALL) -e ".[test]"
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/cspon-rs demo --out outputs/demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check cspon_rs models training inference api tests benchmarks data_samples

typecheck: $(VENV)/.installed-test
	$(BIN)/python ci/typecheck.py

pytest: $(VENV)/.installed-test
	$(BIN)/python -m pytest

test: lint typecheck pytest

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow

serve: $(VENV)/.installed
	$(BIN)/cspon-rs serve

clean:
	rm -rf outputs build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
