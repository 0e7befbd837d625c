# The README's commands. Everything installs and starts what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STACK   := bash stack/stack.sh
ENV     := eval "$$($(STACK) env)"
PYTEST_WORKERS ?= 2

.PHONY: deps producer-deps stack-up stack-down lint alerts-check test test-cdc test-secured test-unit demo faults bench bench-webhook bench-cdc clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

deps: $(STAMP)

# The TypeScript producer's packages (pg, typescript), exactly as package-lock.json pins
# them; from npm's cache when offline.
producer-deps:
	cd tests/producers/typescript && npm ci --silent --no-audit --no-fund --prefer-offline

stack-up: deps
	$(STACK) up

stack-down:
	$(STACK) down

lint: deps alerts-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	cd contracts && npm ci --silent --no-audit --no-fund && node compile.mjs --check

# The alert rules parse, and each fires (and holds back) as monitoring/alerts_test.yml says.
alerts-check:
	@command -v promtool >/dev/null || { echo "promtool missing: apt-get install prometheus (Debian)"; exit 1; }
	promtool check rules monitoring/alerts.yml
	promtool test rules monitoring/alerts_test.yml

# The tests: unit, then integration in parallel, then the tests that restart shared
# services (broker, database, node) and the seeded fault campaign, which must run alone,
# then the secured stack's.
test: deps producer-deps stack-up lint
	$(ENV) && $(BIN)/pytest tests/unit -q
	$(ENV) && $(BIN)/pytest tests/integration tests/faults -q -n $(PYTEST_WORKERS) -m "not disruptive and not cdc"
	$(ENV) && $(BIN)/pytest tests/integration tests/faults -q -m "disruptive and not cdc"
	$(MAKE) --no-print-directory test-secured

# The secured stack (TLS, SASL, ACLs: `stack.sh up --secure`) in a home and on ports of its
# own beside the main one, sharing its downloads; tests/secured against it, then down,
# whatever the tests said.
SECURE_PORTS ?= TOKENDIST_PG_PORT=25632 TOKENDIST_KAFKA_PORT=30092 TOKENDIST_ANVIL_PORT=28745
SECURE_STACK := export TOKENDIST_STACK_HOME=$(CURDIR)/.stack-secure \
	TOKENDIST_STACK_CACHE=$(CURDIR)/.stack/cache $(SECURE_PORTS)
test-secured: deps
	$(SECURE_STACK) && { $(STACK) up --secure && $(ENV) && $(BIN)/pytest tests/secured -q; \
	  rc=$$?; $(STACK) down; exit $$rc; }

# Payments end to end through Debezium (Kafka Connect workers of the tests' own) instead of
# the relay, a worker SIGKILLed mid-stream: needs the Connect jars that `up --cdc` installs.
test-cdc: deps
	$(STACK) up --cdc
	$(ENV) && $(BIN)/pytest tests/integration/test_cdc.py -q -m cdc

test-unit: deps
	$(BIN)/pytest tests/unit -q

demo: deps stack-up
	$(ENV) && $(BIN)/tokendist demo

# The long fault campaign (CI runs a short one inside `make test`): SEED=... RUNS=...
SEED ?= 1
RUNS ?= 1000
faults: deps stack-up
	$(ENV) && $(BIN)/python -m tests.faults --seed $(SEED) --runs $(RUNS) --rotate

# BENCH_ARGS="--events 2000 --consumers 1,3" etc.: see `tokendist bench --help`.
BENCH_ARGS ?=
bench: deps stack-up
	$(ENV) && $(BIN)/tokendist bench $(BENCH_ARGS)

bench-webhook: deps stack-up
	$(ENV) && $(BIN)/python -m tokendist.bench.webhook

# Relay vs Debezium CDC, side by side (one JSON line): `python -m tokendist.bench.cdc --help`.
bench-cdc: deps
	$(STACK) up --cdc
	$(ENV) && $(BIN)/python -m tokendist.bench.cdc

clean: stack-down
	$(SECURE_STACK) && $(STACK) down
	rm -rf .stack .stack-secure $(VENV)
