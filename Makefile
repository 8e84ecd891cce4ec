# Engram developer commands. `make help` lists them.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The embedding model ships in a Python package; never reach for the model hub.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# External-mode tests use the machine's own servers; override to point elsewhere.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/engram_test

.DEFAULT_GOAL := help
.PHONY: help install dev run token worker lint typecheck test test-embedded test-external coverage bench bench-faults clean

help: ## List the targets with what they do
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	# The CPU build of PyTorch; a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed clients/python/pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e './clients/python[pandas]'
	touch $@

install: $(VENV)/.installed ## Create the virtual environment and install the service

dev: $(VENV)/.dev-installed ## Install the service with the test and lint tools

# `make run` signs tokens with a secret it keeps in the data folder, unless one is configured.
DEV_SECRET_FILE ?= .engram/auth-secret

run: install ## Start the service on http://127.0.0.1:8000 with embedded Redis and Postgres
	@if [ -z "$$AUTH_HS256_SECRET$$AUTH_HS256_SECRET_FILE$$AUTH_JWKS_FILE$$AUTH_JWKS_URL" ]; then \
		$(BIN)/engram init-secret $(DEV_SECRET_FILE); \
		export AUTH_HS256_SECRET_FILE=$(DEV_SECRET_FILE); \
	fi; $(BIN)/engram serve

token: install ## Print a development token: make token SUB=alice [SCOPES="memory:read memory:write"]
	@AUTH_HS256_SECRET_FILE=$${AUTH_HS256_SECRET_FILE:-$(DEV_SECRET_FILE)} $(BIN)/engram token \
		--sub $(or $(SUB),$(error set SUB, for example make token SUB=alice)) \
		$(foreach scope,$(SCOPES),--scope $(scope))

worker: install ## Run a standalone promotion worker (needs REDIS_URL and DATABASE_URL)
	$(BIN)/engram worker

lint: dev ## Check style and formatting with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev ## Check types with mypy (strict)
	$(BIN)/mypy app embeddings retrieval prompts tests bench clients/python/engram_client

test-embedded: dev ## Run the tests against embedded Redis and Postgres
	rm -f .coverage .coverage.*
	ENGRAM_TEST_MODE=embedded $(BIN)/pytest --cov --cov-report= -q

test-external: dev ## Run the tests against the servers at TEST_REDIS_URL and TEST_DATABASE_URL
	ENGRAM_TEST_MODE=external REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL=$(TEST_DATABASE_URL) \
		$(BIN)/pytest --cov --cov-append --cov-report= -q

coverage: dev ## Report coverage of the last test runs; fails under 90 %
	$(BIN)/coverage combine --quiet || true
	$(BIN)/coverage report

test: lint typecheck test-embedded test-external coverage ## Lint, type-check, and test in both modes

# Benchmarks use their own databases and Redis database 12 at these servers; see docs/benchmarks.md.
BENCH_SCALE ?= full
LOCOMO ?=

bench: dev ## Reproduce docs/benchmarks.md: make bench [BENCH_SCALE=small] [LOCOMO=path/to/locomo10.json]
	$(BIN)/python -m bench.run --scale $(BENCH_SCALE) $(if $(LOCOMO),--locomo $(LOCOMO))

bench-faults: dev ## Kill workers, stop Postgres and crash Redis during ingest; count every turn
	$(BIN)/python -m bench.faults

clean: ## Remove the virtual environment, caches and local data
	rm -rf $(VENV) .engram .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.*
