# livegate: the two commands of README.md are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PORT ?= 8000
HOST ?= 127.0.0.1
# Parallel workers for the test suite (tests are independent; each starts its own servers).
# --dist loadfile keeps a file's tests on one worker, so module-scoped servers and browsers
# are started once per file (xdist 3.8's loadgroup is ignored under pytest 9.2: it groups nothing).
WORKERS ?= auto

.PHONY: run test install system-deps contract lint bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests need: Chromium for the browser tests, redis-server for the
# scale-out tests, redis-sentinel for the failover tests, postgresql for the store and
# cluster tests (initdb/pg_ctl under /usr/lib/postgresql/NN/bin; the tests start their own
# servers on free ports, never the machine's own cluster, and run them as an unprivileged
# account when we are root), nginx as the load balancer of the cluster browser test (in
# /usr/sbin, often not on PATH).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	{ command -v pg_ctl >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; } \
	  || missing="$$missing postgresql"; \
	{ command -v nginx >/dev/null || test -x /usr/sbin/nginx; } || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y --no-install-recommends $$missing \
	    || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends $$missing; }; \
	fi

run: $(STAMP)
	LIVEGATE_DEV=1 $(BIN)/livegate serve --host $(HOST) --port $(PORT)

test: $(STAMP) system-deps
	$(BIN)/livegate contract check
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -n $(WORKERS) --dist loadfile -p no:cacheprovider

contract: $(STAMP)
	$(BIN)/livegate contract generate

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The chaos soak of issue 14 (not part of `make test`): gateways SIGKILLed, Redis restarted,
# client links cut and slowed, a ledger over every connection. MINUTES of chaos (default 3);
# SOAK_ARGS for more flags (e.g. SOAK_ARGS="--seed 7 --users 40"), see bench/soak.py --help.
MINUTES ?= 3
SOAK_ARGS ?=
soak: $(STAMP) system-deps
	$(BIN)/python bench/soak.py --minutes $(MINUTES) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .livegate-data test-artifacts
