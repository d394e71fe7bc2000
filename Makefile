# The targets a newcomer looks for. Each one builds the virtualenv it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: dev test e2e e2e-cluster lint format bench soak clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(READY)

## Run the whole product in one process: api, worker and push on SQLite + in-process Redis.
dev: $(READY)
	$(BIN)/python -m devserver

## Run the fast tests: unit, api, workers and push in process, on the local PostgreSQL and Redis.
test: $(READY)
	$(BIN)/python -m pytest -m "not e2e" -n 2

## Run the end-to-end tests: the Procfile's real processes, browsers, faults (a few minutes).
e2e: $(READY)
	$(BIN)/python -m pytest -m e2e

## The end-to-end tests again on a Redis Cluster of three masters with a replica each, which the
## tests start themselves (redis-server --cluster-enabled on free ports; no Docker).
e2e-cluster: $(READY)
	TEST_REDIS_MODE=cluster $(BIN)/python -m pytest -m e2e

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(READY)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(READY)
	$(BIN)/python -m bench.suite

## Ten minutes of steady load on the real processes: RSS per process over time, and zero loss.
soak: $(READY)
	$(BIN)/python -m bench.soak --minutes 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache headless-chat.db*
