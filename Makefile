# The two commands: `make run` and `make test`. Each bootstraps .venv from requirements.lock.
# `make serve` is the production start.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

# supervisord (ops/supervisord.conf) replaces make's shell (exec), so Ctrl-C and SIGTERM reach
# it directly, it stops every process it started, and make sees a clean exit. $(1): workers.
supervise = exec env HOST=$(HOST) PORT=$(PORT) WORKERS=$(1) VENV_BIN=$(abspath $(VENV))/bin \
  SUPERVISOR_PIDFILE=$${TMPDIR:-/tmp}/agent-runtime-$(PORT).supervisord.pid \
  $(VENV)/bin/supervisord -c ops/supervisord.conf -u $$(id -u)

.PHONY: run serve test test-sqlite test-postgres venv lock lint typecheck bench bench-load clean

$(VENV)/.installed: requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements.lock into $(VENV) ..."
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	@touch $@

venv: $(VENV)/.installed

# Embedded defaults: SQLite, in-memory channel layer, local-memory cache, the demo model.
run: export DEBUG := $(or $(DEBUG),true)
run: venv
	@$(PY) manage.py prepare --host $(HOST) --port $(PORT)
	@$(call supervise,1)

# Production: DEBUG off (refused on development secrets, before anything else runs), WORKERS
# daphne processes sharing HOST:PORT, and the task cluster. Meant for DATABASE_URL + REDIS_URL.
serve: export DEBUG := false
serve: venv
	@$(PY) manage.py prepare --host $(HOST) --port $(PORT) --workers $(WORKERS)
	@$(call supervise,$(WORKERS))

# The whole suite: a SQLite pass, then the database tests again on PostgreSQL when it is there
# (always in CI). End-to-end tests choose their own databases, so they run once. Type errors
# fail it first, before any test runs.
test: venv typecheck
	@bash tests/browser/setup.sh
	@$(PY) -m tests.services check
	$(PY) -m pytest -q
	@if $(PY) -m tests.services postgres-wanted; then \
	  echo "--- PostgreSQL pass ---"; \
	  DATABASE_URL=$$($(PY) -m tests.services postgres-url) $(PY) -m pytest -q -m "not e2e and not browser"; \
	fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# mypy with the Django and DRF plugins; paths and options are in pyproject.toml ([tool.mypy]).
# The cache in .mypy_cache makes a rerun take about a second.
typecheck: venv
	$(VENV)/bin/mypy

# One run: the single-stream figures, then 100 turns at once on the embedded defaults (against a
# bare relay under the same daphne, measured in the same run) and on PostgreSQL + Redis, then
# 300 turns on one and on two workers (capacity growing with workers).
bench: venv
	$(PY) bench/stream.py
	$(PY) bench/load.py --turns 100 --sqlite --floor --uvicorn
	$(PY) bench/load.py --turns 100 --floor
	$(PY) bench/load.py --turns 300
	$(PY) bench/load.py --turns 300 --workers 2

# N turns at once on PostgreSQL + Redis (a database and key prefix of its own, removed after).
bench-load: venv
	$(PY) bench/load.py

# Regenerate the hashed lock from pyproject.toml (needs `pip install uv`).
lock:
	uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
