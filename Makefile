# Two entry points: `make demo` and `make test`. Each creates or updates the
# virtualenv at .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A persistent compilation cache makes repeated runs and subprocess tests cheap.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: demo test bench install install-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.runtime-installed: requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $@

# torch goes in first and alone, so that pip takes the local CPU build.
$(VENV)/.test-installed: requirements-test.txt $(VENV)/.runtime-installed
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.runtime-installed
install-test: $(VENV)/.test-installed

demo: install
	$(PY) scripts/demo.py

# Style is checked, not hoped for: unformatted files fail the run. The
# docstring examples of the library run as doctests. The suite runs on two
# pytest-xdist workers, one test file per worker at a time (module fixtures
# are built once): most tests compile, and XLA's compiler uses one core.
# Files go out in collection order, longest first (tests/conftest.py), so
# the two workers finish together. TEST_WORKERS=0 runs it in one process.
# Every test's time lands in .cache/test-report.xml (the suite must stay
# under 20 minutes on 2 cores: find what to trim there).
TEST_WORKERS ?= 2
test: install-test
	$(PY) -m pyink --check opd_jax scripts tests configs benchmarks
	$(PY) -m pytest -q --doctest-modules opd_jax
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 --junitxml=.cache/test-report.xml tests

# Benchmarks against TRL and transformers (TRL only here, never in tests);
# the package is benchmarks/ (`python -m benchmarks SUBCOMMAND`).
bench: install-test
	$(PY) -m pip install -q -r requirements-bench.txt
	JAX_PLATFORMS=cpu $(PY) -m benchmarks memory
	JAX_PLATFORMS=cpu $(PY) -m benchmarks step
	JAX_PLATFORMS=cpu $(PY) -m benchmarks step --dtype bfloat16
	JAX_PLATFORMS=cpu $(PY) -m benchmarks rollout

clean:
	rm -rf $(VENV) .cache
