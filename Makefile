# spec-provider developer commands. `make help` lists them.

# The PostgreSQL the tests use (each test creates and drops its own database in it).
DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres
export DATABASE_URL

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt bench bench-scale bench-target db-up db-down

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## Serve on 127.0.0.1:8080 with embedded SQLite (spec-provider.db)
	cargo run --release

test: ## Run every test (PostgreSQL from DATABASE_URL or 127.0.0.1:5432; started with docker compose if absent)
	@scripts/ensure-postgres.sh
	@command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install --quiet kubernetes-validate
	cargo test

bench: ## Load benchmark on PostgreSQL and SQLite (a few minutes); writes docs/benchmarks.md
	@scripts/ensure-postgres.sh
	cargo bench --bench load -- $(BENCH_ARGS)

bench-scale: ## The benchmark at scale (about 15 minutes): RECORDS specs (default 1000000), ListSpecs and sweeper too
	@scripts/ensure-postgres.sh
	cargo bench --bench load -- --scale --records $(or $(RECORDS),1000000) $(BENCH_ARGS)

bench-target: ## The benchmark against a server running elsewhere: TARGET=host:port (plaintext)
	@test -n "$(TARGET)" || { echo "usage: make bench-target TARGET=host:port"; exit 2; }
	cargo bench --bench load -- --target $(TARGET) $(BENCH_ARGS)

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt

db-up: ## Start PostgreSQL 15 in Docker on 127.0.0.1:5432
	docker compose up -d --wait postgres

db-down: ## Stop the Docker PostgreSQL (its data volume is kept)
	docker compose down
