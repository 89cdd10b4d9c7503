# stepstream developer commands. Needs only Python >= 3.11 on PATH; everything else is
# installed into .venv by the targets below.

# The interpreter that creates the venv: python3.11 if present, else python3.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Written after a successful install; pip runs again only when pyproject.toml is newer.
INSTALLED := $(VENV)/.installed
PIP_FLAGS := --quiet --disable-pip-version-check --progress-bar off

.DEFAULT_GOAL := help
.PHONY: help venv install browser up test test-fast lint fmt bench lock clean

help:
	@echo "make up        install, then run redis + worker + web + flower in the foreground"
	@echo "               (restarts the worker when Python code changes; UP_ARGS=--no-reload: off)"
	@echo "make test      install, lint, then run the whole test suite"
	@echo "make test-fast lint, then the suite without its slow tests and the browser (under 2 min)"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make fmt       ruff format and ruff check --fix"
	@echo "make bench     run the benchmarks (one JSON object per line)"
	@echo "make lock      re-pin constraints.txt, the image's dependencies (after changing pyproject.toml)"
	@echo "make clean     remove .venv and caches (keeps .stepstream/ data)"

venv: $(VENV_PYTHON)

$(VENV_PYTHON):
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: no python3.11 or python3 on PATH; install Python >= 3.11" >&2; exit 1; \
	fi
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) is Python $$("$(PYTHON)" -c 'import platform; print(platform.python_version())'); stepstream needs >= 3.11 (try: make PYTHON=/path/to/python3.11)" >&2; \
		exit 1; }
	"$(PYTHON)" -m venv $(VENV)
	$(VENV_PYTHON) -m pip install $(PIP_FLAGS) --upgrade pip

install: $(INSTALLED)

$(INSTALLED): pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install $(PIP_FLAGS) -e '.[test]'
	@touch $@

# `make up` keeps pip's output in a log, shown only when the install fails, so the
# services' start is all the terminal shows. UP_ARGS go to devtools.up (--help).
INSTALL_LOG := .stepstream/install.log
UP_ARGS ?=

up:
	@mkdir -p $(dir $(INSTALL_LOG))
	@echo "installing into $(VENV) (log: $(INSTALL_LOG))"
	@$(MAKE) --no-print-directory install >$(INSTALL_LOG) 2>&1 || { \
		cat $(INSTALL_LOG) >&2; \
		echo "error: the install failed; its output is above and in $(INSTALL_LOG)" >&2; \
		exit 1; }
	@$(VENV_PYTHON) -m devtools.up $(UP_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The browser tests drive Debian's Chromium (no browser download). Installed here when
# it is missing and this user may (root, apt-get); otherwise those tests say why they
# are skipped.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's chromium for the browser tests"; \
			apt-get install -y -q chromium >/dev/null 2>&1 \
				|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
				|| echo "warning: chromium could not be installed; the browser tests will be skipped" >&2; \
		else \
			echo "warning: no $(CHROMIUM) and no way to install it; the browser tests will be skipped" >&2; \
		fi; \
	fi

test: install lint browser
	$(VENV_PYTHON) -m pytest -q

# The inner loop: everything but the tests marked slow (chaos, outages, clock skew, scale
# costs, node kills, shutdown, the wheel) and the browser.
test-fast: install lint
	$(VENV_PYTHON) -m pytest -q -x -m "not slow" --ignore=tests/browser

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(VENV_PYTHON) -m pip install $(PIP_FLAGS) -e '.[bench]'
	$(VENV_PYTHON) -m bench

# constraints.txt pins every package the image installs (the project with its `server`
# extra), resolved afresh in a throwaway venv. The Dockerfile and the wheel test install
# through it; tests/packaging/test_constraints.py fails when pyproject.toml asks for
# something it does not pin.
LOCK_VENV := build/lock-venv

lock: $(VENV_PYTHON)
	rm -rf $(LOCK_VENV)
	$(VENV_PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install $(PIP_FLAGS) '.[server]'
	{ echo "# The image's dependencies, pinned: \`make lock\` rewrites this file from pyproject.toml."; \
	  echo "# pip install --constraint constraints.txt '<stepstream wheel>[server]'"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude stepstream; } > constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
