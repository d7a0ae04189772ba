# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist: two workers (the CI machine has 2 cores); tests marked
# @pytest.mark.xdist_group("name") run in one worker. `make test PYTEST_PARALLEL=` runs serially.
PYTEST_PARALLEL ?= -n 2 --dist loadgroup

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a looser requirement would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medfed demo

test: $(STAMP)
	$(BIN)/ruff check medfed tests benchmarks examples
	$(BIN)/mypy medfed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not alone"
	$(BIN)/python -m pytest -m alone

lint: $(STAMP)
	$(BIN)/ruff format --check medfed tests benchmarks examples
	$(BIN)/ruff check medfed tests benchmarks examples
	$(BIN)/mypy medfed
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
