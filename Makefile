# The README's commands. `make demo` runs the main job on the embedded default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
export BULKCHANGE_HOME ?= $(CURDIR)/.bulkchange
export DAGSTER_HOME ?= $(BULKCHANGE_HOME)/dagster

.PHONY: setup demo test check dev clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'

setup: $(PY)

demo: $(PY)
	mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/bulkchange demo

test: $(PY)
	$(PY) -m pytest -n 3 --dist worksteal

# The architecture and style checks .ci/run runs before the tests (configured in pyproject.toml).
check: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

dev: $(PY)
	mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/bulkchange init-db
	scripts/dev.sh

clean:
	rm -rf $(BULKCHANGE_HOME)
