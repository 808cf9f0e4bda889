# ykt: the two commands are `make demo` and `make test` (see README.md).
# Every install step lives here: Debian packages through apt-get, a virtualenv, Python packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# Debian packages the code and the tests use (installed when missing).  postgresql: the server
# tests run on SQLite and again on a throwaway PostgreSQL cluster the tests start (tests/dbs.py);
# systemd: systemd-analyze checks the units in systemd/.
APT_PACKAGES := chromium fonts-noto-cjk libzbar0 pcscd vsmartcard-vpcd libpcsclite-dev python3-dev gcc postgresql systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps sysdeps demo test test-fast lint bench docs clean

all: test

sysdeps:
	@missing=""; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="python3-venv"; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml Makefile
	$(MAKE) sysdeps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

deps: $(STAMP)

demo: deps
	$(BIN)/ykt demo

# The whole suite (tests/unit and the process, socket, pcscd and PostgreSQL layer above it),
# with the 15 slowest tests at the end.  Property tests run derandomized under CI=true.
# Two pytest-xdist workers, each test file whole on one worker (its module-scoped servers start
# once); each worker has its own PostgreSQL cluster and its own ports (sim/harness/procs.py).
# PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
test: deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# The unit layer alone (no processes, no sockets): well under a minute.
test-fast: deps
	$(BIN)/python -m pytest tests/unit -q --durations=5 $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Figures, never pass/fail: `make bench`, or e.g. `make bench BENCH_ARGS="--quick --json"`.
BENCH_ARGS ?=
bench: deps
	$(BIN)/ykt bench $(BENCH_ARGS)

# docs/cli.md's reference part from `ykt … --help` (tests/test_docs.py checks they agree).
docs: deps
	$(BIN)/python -m tests.cli_doc --write

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
