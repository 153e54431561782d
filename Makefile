# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LAKE ?= $(CURDIR)/lake

.PHONY: demo test setup bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/mliplake --lake $(LAKE) demo

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(LAKE) $(VENV)
