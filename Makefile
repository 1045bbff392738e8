# ImageJobs — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
SWIFT ?= swift
BIN_DIR = $(shell $(SWIFT) build --show-bin-path 2>/dev/null)

.PHONY: help deps build test examples demo db-up db-down migrate bench bench-quick bench-peers chaos soak generate compose-check

help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install missing system packages (PostgreSQL server, libpq, zlib, pkg-config, openssl, Chromium and its driver for the dashboard's browser test).
	@missing=""; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	pkg-config --exists libpq 2>/dev/null || missing="$$missing libpq-dev"; \
	pkg-config --exists zlib 2>/dev/null || missing="$$missing zlib1g-dev"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql postgresql-contrib"; \
	command -v python3 >/dev/null || missing="$$missing python3 python3-venv"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

build: deps ## Build the imagejobs binary (debug).
	$(SWIFT) build

generate: ## Regenerate the embedded migrations from migrations/.
	python3 scripts/embed-migrations.py

test: deps ## Start a throwaway PostgreSQL, run every test, stop it (even when tests fail).
	@scripts/test.sh

chaos: build ## The fault drills alone against the local cluster (kill -9, restarts, crashes, SIGSTOP).
	@url=$${DATABASE_URL:-$$(scripts/db.sh up | sed 's/^DATABASE_URL=//')}; \
	  DATABASE_URL="$$url" "$(BIN_DIR)/imagejobs-chaos" --worker-bin "$(BIN_DIR)/imagejobs-drill-worker" --pg-ctl "scripts/db.sh ctl" \
	  --jobs $${CHAOS_JOBS:-5000} --seed $${CHAOS_SEED:-$$(date +%s)}

soak: build ## A long run: 1,000,000 jobs (SOAK_JOBS) with retention pruning, exactly-once and table-bloat checks.
	@url=$${DATABASE_URL:-$$(scripts/db.sh up | sed 's/^DATABASE_URL=//')}; \
	  DATABASE_URL="$$url" "$(BIN_DIR)/imagejobs-chaos" --worker-bin "$(BIN_DIR)/imagejobs-drill-worker" --pg-ctl "scripts/db.sh ctl" \
	  --scenarios soak --soak-jobs $${SOAK_JOBS:-1000000} --workers $${SOAK_WORKERS:-4}

examples: build ## Build and run every package under Examples/ against the local cluster (or $$DATABASE_URL).
	@url=$${DATABASE_URL:-$$(scripts/db.sh up | sed 's/^DATABASE_URL=//')}; DATABASE_URL="$$url" scripts/examples.sh

demo: deps ## The end-to-end demo: PostgreSQL, migrations, a batch, two workers, live progress, PNGs in demo-output/
	@scripts/demo.sh

db-up: deps ## Start the local PostgreSQL cluster and print its DATABASE_URL.
	@scripts/db.sh up

db-down: ## Stop the local PostgreSQL cluster and delete its data.
	@scripts/db.sh down

migrate: build ## Apply pending migrations to $$DATABASE_URL (or the local cluster).
	@url=$${DATABASE_URL:-$$(scripts/db.sh up | sed 's/^DATABASE_URL=//')}; \
	  "$(BIN_DIR)/imagejobs" migrate up --database-url "$$url"

bench: deps ## Full benchmark (release build) on a durable local cluster (fsync on), or $$DATABASE_URL.
	@scripts/bench.sh

bench-quick: deps ## The benchmark in quick mode (seconds).
	@BENCH_QUICK=1 scripts/bench.sh

PEERS_RUN ?= ../shared/bench/peers/run.sh

bench-peers: deps ## The established queues and ImageJobs side by side; needs the peers' harness at ../shared/bench/peers (PEERS_RUN), not part of this repository.
	@test -x "$(PEERS_RUN)" || { echo "make bench-peers: the peers' harness $(PEERS_RUN) is missing; it is not part of this repository (set PEERS_RUN=/path/to/run.sh)" >&2; exit 2; }
	$(SWIFT) build -c release --product imagejobs
	BENCH_EXTERNAL="$(CURDIR)/bench/imagejobs" "$(PEERS_RUN)"

compose-check: ## Validate docker-compose.yml against the Compose specification and check service commands.
	@scripts/compose-check.sh
