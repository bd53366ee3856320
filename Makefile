# Two commands do all the set-up on a fresh machine (each creates/refreshes .venv itself):
#   make nightly   - the nightly pipeline for every shipped city, through Airflow, on embedded defaults
#   make test      - lint + the whole test suite (CI runs exactly this)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv nightly test lint bench clean

# uv installs what pip would, in a sixth of the time (the venv was 160 of the clean-clone CI's seconds).
# It does not read pip's configuration: the folder of local wheels (the pinned CPU torch) is passed on.
UV_VERSION := 0.13.10
WHEELS ?= /opt/wheels
UV := $(VENV)/bin/uv
UV_FLAGS := --python $(PY) -q $(if $(wildcard $(WHEELS)/*.whl),--find-links $(WHEELS))

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	@# the pinned CPU torch first: an open torch requirement would pull a multi-GB CUDA build
	$(UV) pip install $(UV_FLAGS) --compile-bytecode torch==2.13.0
	@# --compile-bytecode: every package's .pyc written once here. Where PYTHONDONTWRITEBYTECODE is set (as on
	@# this machine kind) Python never writes them, and each process compiled torch, MLflow and Airflow anew on
	@# import: 11.6 s for `import torch, mlflow, pandas, pyarrow, sklearn, duckdb`, 5.4 s with the .pyc files;
	@# the suite and the nightly start dozens of such processes (Airflow tasks, workers, tests' children).
	$(UV) pip install $(UV_FLAGS) --compile-bytecode -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

nightly: venv
	@# the shipped cities that make nightly runs (cities/ may hold more: `traffic nightly <city>` runs one)
	$(PY) -m traffic.cli nightly berlin los_angeles

test: venv
	$(PY) -m ruff check traffic dags tests bench
	$(PY) -m ruff format --check traffic dags tests bench
	$(PY) -m mypy
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check traffic dags tests bench
	$(PY) -m mypy

bench: venv
	$(PY) bench/bench_rasterize.py
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf var
