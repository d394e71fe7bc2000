# The targets a newcomer looks for. Each one builds the virtualenv it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: lock dev test e2e e2e-cluster lint format bench soak clean

# The exact versions CI tested, each file checked against its hash, then the project itself without
# letting pip resolve anything further.
$(READY): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
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
## Not yet on a cluster: tests that seed or read Redis keys in one Redis's layout with a plain
## client (an untagged job id enqueued by hand, a raw PUBLISH to a user's channel, ZCARD of a
## presence key), which a cluster answers with MOVED or a cross-slot error before the product is
## reached. Those checked are of that kind (the docs commands, the socket cap, deactivation, whose
## server API flow runs here in test_deactivation.py); not every line has been checked for a
## product cause. Remove a line once its test passes on a cluster.
CLUSTER_NOT_YET := \
	--deselect tests/e2e/test_admin_ui.py::test_dashboard_signs_in_shows_a_dead_letter_and_retries_it \
	--deselect tests/e2e/test_admin_ui.py::test_dashboard_on_a_busy_queue_as_the_docs_show_it \
	--deselect tests/e2e/test_deactivation.py::test_deactivation_closes_sockets_on_both_push_processes_4403 \
	--deselect tests/e2e/test_deployment.py::test_workers_on_one_host_share_a_metrics_port_setting \
	--deselect tests/e2e/test_docs_commands.py::test_the_docs_shell_blocks_work_as_written \
	--deselect tests/e2e/test_prometheus.py::test_dead_letters_growing_fires \
	--deselect tests/e2e/test_push.py::test_trimmed_id_gets_resync_required \
	--deselect tests/e2e/test_push.py::test_client_that_never_reads_is_closed_4408_with_memory_bounded \
	--deselect tests/e2e/test_push.py::test_the_memory_bound_is_one_a_regression_would_cross \
	--deselect tests/e2e/test_push.py::test_the_socket_cap_counts_both_push_processes \
	--deselect tests/e2e/test_worker_tier.py::test_backlog_drains_fast_and_a_second_worker_adds_throughput \
	--deselect tests/e2e/test_worker_tier.py::test_sigkilled_worker_jobs_come_back_within_15_seconds_each_once \
	--deselect tests/e2e/test_worker_tier.py::test_workers_are_watched_with_rest_cli_and_metrics

e2e-cluster: $(READY)
	TEST_REDIS_MODE=cluster $(BIN)/python -m pytest -m e2e $(CLUSTER_NOT_YET)

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

## Refresh requirements.lock (everything, for make's venv) and requirements-runtime.lock (the image's)
## from pyproject.toml: rerun after changing its dependencies. Pins already in the files are kept
## unless pyproject.toml rules them out; `make lock UPGRADE=1` moves each to the newest it allows.
# uv, not pip-tools: it resolves for a target Python and platform rather than the one it runs on, and
# reads only PyPI (not this machine's pip configuration), so every hash in the files is PyPI's.
UV_VERSION := 0.13.9
LOCK_FLAGS := --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock"
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile pyproject.toml --all-extras $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) \
		-o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra tracing $(LOCK_FLAGS) -c requirements.lock \
		-o requirements-runtime.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache headless-chat.db*
