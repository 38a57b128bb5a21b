# Developer and CI entry points. CI runs `.ci/run`, which is `make test` with CI=true.
#
#   make deps    system packages (dovecot, doveadm, promtool, openssl) if missing
#   make venv    .venv with the package and its test extras; redone when pyproject.toml changes
#   make test    deps + venv, then pytest, then lint; fails if either failed (both always run)
#   make lint    ruff + mypy + import-linter (the layer contract in pyproject.toml)
#   make demo    the end-to-end demo against a private Dovecot
#   make bench   the benchmarks

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV ?= .venv
PY := $(VENV)/bin/python

# First interpreter that is Python >= 3.11 (pyproject's requires-python).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && \
	   $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	  echo $$p; break; fi; done)

# The stamp's name carries pyproject.toml's hash: any change to it (deps, extras)
# means a reinstall, and a plain `make test` after that costs nothing.
PYPROJECT_HASH := $(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)

.PHONY: deps venv test lint demo bench

deps:
	@bash scripts/install-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "make venv: need python3 >= 3.11 on PATH" >&2; exit 1; fi
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "make venv: $(VENV) has Python < 3.11; recreating it" >&2; rm -rf $(VENV); fi
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# pytest first, then lint, so that one run reports both; the exit status says
# whether either failed.
test: deps venv
	@rc=0; \
	$(VENV)/bin/pytest -q || rc=1; \
	$(MAKE) --no-print-directory lint || rc=1; \
	exit $$rc

lint: venv
	@rc=0; \
	echo "+ ruff check retention tests"; $(VENV)/bin/ruff check retention tests || rc=1; \
	echo "+ mypy"; $(VENV)/bin/mypy || rc=1; \
	echo "+ lint-imports"; $(VENV)/bin/lint-imports --no-cache || rc=1; \
	exit $$rc

# The demo module may live in the package (retention/demo.py) or in scripts/.
demo: deps venv
	@if [ -f retention/demo.py ]; then $(PY) -m retention.demo; \
	else $(PY) scripts/demo.py; fi

# Every bench/bench_*.py is a standalone script that prints its measurements.
# BENCH_ARGS is passed to each (e.g. make bench BENCH_ARGS="--runs 1").
bench: deps venv
	@rc=0; for script in bench/bench_*.py; do \
	  [ -f "$$script" ] || continue; \
	  echo "+ $(PY) $$script $(BENCH_ARGS)"; $(PY) "$$script" $(BENCH_ARGS) || rc=1; \
	done; exit $$rc
