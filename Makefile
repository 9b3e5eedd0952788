# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SPECML := $(VENV)/bin/specml
STAMP  := $(VENV)/.installed-all-dev
export FEAST_USAGE := False
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: install demo test test-fast lint schema docs goldens bench bench-all clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned (==2.13.0, the CPU wheel) in pyproject.toml so pip never pulls a CUDA build
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: install, validate the examples, make demo data, run the churn system end to end locally
demo: install
	$(SPECML) validate specs/churn.yaml specs/fraud.yaml specs/demand.yaml
	$(SPECML) demo-data specs/churn.yaml --rows 4000 --seed 0
	$(SPECML) apply specs/churn.yaml --target local

## test: install and run every test, slow end-to-end ones included (what CI runs)
test: install
	$(PY) -m pytest -q

## test-fast: skip the slow end-to-end tests
test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check cli compiler runtime targets tests bench
	$(VENV)/bin/ruff format --check cli compiler runtime targets tests bench
	$(VENV)/bin/mypy compiler

schema: install
	$(SPECML) schema

goldens: install
	$(PY) -m pytest -q tests/targets tests/compiler/test_lower.py --update-goldens

bench: install
	$(PY) bench/compile_speed.py

bench-all: bench
	$(PY) bench/serving.py
	$(PY) bench/features.py
	$(PY) bench/drift.py
	$(PY) bench/quality.py
	$(PY) bench/training.py
	$(PY) bench/apply_scale.py

docs: install
	$(SPECML) docs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis specs/.specml specs/data
