# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LAKE ?= $(CURDIR)/lake

# the main job and the UI share the local Dagster instance and the lake
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
RUN_ENV := DAGSTER_HOME=$(CURDIR)/dagster_home MLIPLAKE_LAKE=$${MLIPLAKE_LAKE:-$(LAKE)}

.PHONY: demo test lint setup slurm postgres chromium bench ui clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	# torch first, pinned: this machine's local CPU wheel (an unpinned torch pulls GBs of CUDA)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,bench,dagster,ml,server]"
	$(BIN)/python -m pip install -q --no-deps matbench-discovery==1.3.1
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(RUN_ENV) $(BIN)/python -m pipelines.demo

ui: setup
	$(RUN_ENV) $(BIN)/dagster dev -m pipelines.definitions -h 127.0.0.1 -p 3000

# a real single-node Slurm for the HPC launcher's tests (Debian's packages; skipped where not root)
slurm:
	@command -v slurmd >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT) slurmd slurmctld slurm-client munge >/dev/null || { apt-get update -q >/dev/null && \
	    $(APT) slurmd slurmctld slurm-client munge >/dev/null; }; } || echo "Slurm not installed: its tests are skipped"; }

# a real PostgreSQL server for the accounts tests (Debian's packages; the tests start their own)
postgres:
	@{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { $(APT) postgresql >/dev/null || \
	    { apt-get update -q >/dev/null && $(APT) postgresql >/dev/null; }; } || echo "PostgreSQL not installed: its tests are skipped"; }

# headless Chromium for the portal's browser tests (Debian's packages; Playwright drives it, and
# `playwright install` is never run; skipped where not root)
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT) chromium chromium-driver >/dev/null || { apt-get update -q >/dev/null && \
	    $(APT) chromium chromium-driver >/dev/null; }; } || echo "Chromium not installed: the browser tests are skipped"; }

lint: setup
	$(BIN)/ruff check src pipelines tests bench

test: setup slurm postgres chromium lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(LAKE) $(VENV)
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
