# Longrun: `make run` starts the whole system, `make test` runs every check.
# Both set themselves up from a fresh clone with only Python 3.11+.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test lint bench chromium wrk clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,embedded,bench]'
	touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's chromium; Playwright's own download does not work offline.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

run: install
	$(BIN)/python -m server.devrun

lint: install
	$(BIN)/ruff check server jobs bots tests bench
	$(BIN)/mypy

test: install chromium lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The status endpoint benchmark drives the server with Debian's wrk (bench/ falls back to a
# slower Python load generator, and says so, where it cannot be installed).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing Debian wrk for the benchmarks"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

bench: install wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
