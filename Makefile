# Longrun: `make run` starts the whole system, `make test` runs every check.
# Both set themselves up from a fresh clone with only Python 3.11+: pip installs uv (one
# pinned, hash-checked wheel), and uv installs exactly what uv.lock says into .venv.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .venv-tools
UV     := $(TOOLS)/bin/uv
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# uv uses the interpreter above and never downloads one of its own.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test lint bench lock upgrade chromium wrk node node-deps clean

$(UV): .ci/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --require-hashes --only-binary :all: -r .ci/uv.txt
	touch $(UV)

# Every command installs from the committed lock, and fails when pyproject.toml has moved on
# without it (uv sync is a no-op in ~0.1 s when .venv already matches). Then everything is
# byte-compiled once, not at every process start: where PYTHONDONTWRITEBYTECODE is set (as in
# this machine's environment) imports cache nothing, and each of the suite's processes compiled
# aiohttp, redis-py and the rest from source (2.1 s of CPU to import the web app instead of 0.6).
# compileall skips what is up to date (~1 s); uv's --compile-bytecode redoes every file (~7 s).
install: $(UV)
	@$(UV) sync --locked --all-extras --quiet || { \
	  echo >&2 ""; \
	  echo >&2 "uv.lock does not match pyproject.toml (or could not be installed: see above)."; \
	  echo >&2 "Run 'make lock' to update the lock from pyproject.toml, and commit both."; \
	  exit 1; }
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib server jobs bots bench tests >/dev/null

# `make lock`: the lock follows pyproject.toml (a dependency added or its range changed),
# moving nothing else. `make upgrade`: every package to the newest release pyproject.toml
# allows. Both print what moved; commit uv.lock with pyproject.toml.
lock: $(UV)
	$(UV) lock

upgrade: $(UV)
	$(UV) lock --upgrade

# Browser tests drive Debian's chromium; Playwright's own download does not work offline.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The Node.js bot SDK (bots/js) and its demo bot run on Debian's nodejs and npm (Node 20+); its
# dependencies come from the committed package-lock.json (`npm ci`, below).
node:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian nodejs and npm for the Node.js bot SDK"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }

# The SDK's npm dependencies, exactly as package-lock.json says (for the Node demo bot that
# `make run` starts, and the Node benchmark); again only when the lock changes.
JS_DEPS := bots/js/node_modules/.package-lock.json
$(JS_DEPS): bots/js/package-lock.json | node
	cd bots/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_DEPS)

node-deps: $(JS_DEPS)

run: install node-deps
	$(BIN)/python -m server.devtools.devrun

lint: install
	$(BIN)/ruff check server jobs bots tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Tests run side by side in TEST_WORKERS processes (pytest-xdist): each has its own key prefix
# and schema, and most of a test is waiting on processes and events, not CPU.
TEST_WORKERS ?= 6

# pytest rewrites the asserts of the test modules and of its plugins' packages (all of hypothesis
# and schemathesis) when each of its processes starts, and caches the result only where bytecode
# may be written: one collection with writing on fills that cache (~2.5 s), after which each of
# the TEST_WORKERS processes collects in 2.4 s of CPU instead of 5.3.
test: install chromium node-deps lint
	@env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1 || true
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The status endpoint benchmark drives the server with Debian's wrk (bench/ falls back to a
# slower Python load generator, and says so, where it cannot be installed).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing Debian wrk for the benchmarks"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

bench: install wrk node-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .run .mypy_cache .ruff_cache .pytest_cache
