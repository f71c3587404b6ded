# occlabel — developer entry points. `make test` is the test command CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# torch spec: 2.13.0 takes the local CPU wheel on the dev machines; override e.g. TORCH="torch==2.5.1".
TORCH ?= torch==2.13.0
EXTRAS ?= dev,nuscenes,kitti
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	# one resolver call: nuscenes-devkit pins numpy<2, which must resolve together with torch and zarr
	$(BIN)/pip install -q "$(TORCH)" -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check occlabel tests scripts examples
	$(BIN)/ruff format --check occlabel tests scripts examples

test: install lint
	$(BIN)/pytest -q

demo: install
	$(BIN)/occlabel demo --out runs/demo

bench: install
	$(BIN)/python scripts/bench.py --out docs/benchmarks.md
	$(BIN)/python scripts/bench_extract.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
