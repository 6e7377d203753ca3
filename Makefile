# Two commands on a fresh machine: `make run` (the whole pipeline, foreground; installs only what
# running needs) and `make test` (installs everything, starts the stack, runs pytest).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := .local/kafka/libs

.PHONY: deps test-deps run test unit conformance lint stack-up stack-down chaos dr cluster bench client-soak clean observability helm

# What running needs (`make run` and every target that starts the stack): the venv, the Kafka jars, Postgres.
deps: $(VENV)/.installed $(KAFKA_LIBS)/.installed .local/.postgres-installed

# Everything `make test` needs: the above, plus the test-only tools (Chromium, Prometheus, helm, wrk).
test-deps: deps .local/.observability-installed .local/.helm-installed .local/.bench-installed

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e clients/python
	$(BIN)/pip install -q --no-deps openmeter==1.0.0b236  # see pyproject.toml's dev extra
	@touch $@

$(KAFKA_LIBS)/.installed: deploy/kafka/pom.xml
	@echo "resolving the Kafka broker's jars from Maven Central (deploy/kafka/pom.xml)"
	@rm -rf $(KAFKA_LIBS) && mkdir -p $(KAFKA_LIBS)
	mvn -B -q -f deploy/kafka/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

.local/.postgres-installed: scripts/ensure-postgres.sh
	bash scripts/ensure-postgres.sh
	@mkdir -p .local && touch $@

# Debian's chromium (status page browser test) and prometheus (promtool, the dashboard check):
# tests/observability only (`make observability`, `make test`).
.local/.observability-installed: scripts/ensure-observability.sh
	bash scripts/ensure-observability.sh
	@mkdir -p .local && touch $@

# wrk (Debian's package): the bench's load generator (`make bench`, and its smoke test in `make test`).
.local/.bench-installed: scripts/ensure-bench.sh
	bash scripts/ensure-bench.sh
	@mkdir -p .local && touch $@

# helm (built from the Go module proxy into .local/bin, minutes from an empty Go cache) and the
# prometheus-operator CRDs (.local/crds): tests/deploy only (`make helm`, `make test`).
.local/.helm-installed: scripts/ensure-helm.sh
	bash scripts/ensure-helm.sh
	@mkdir -p .local && touch $@

# The Helm chart (deploy/helm/opsmantik): lint, template with each values file, schema checks (< 1 min).
helm: $(VENV)/.installed .local/.helm-installed
	$(BIN)/pytest -q -p no:cacheprovider tests/deploy

# The status page, alert rules, dashboard and compose checks alone (< 2 min; part of `make test`).
observability: deps .local/.observability-installed
	$(BIN)/pytest -q -p no:cacheprovider tests/observability

run: deps
	$(BIN)/opsmantik run

test: test-deps
	bash scripts/test.sh

unit: deps
	$(BIN)/pytest -q tests/unit

# Schemathesis against a live gateway (schemathesis.toml, schemas/openapi.yaml); needs the stack
# (`make stack-up`). Part of `make test` too.
conformance: deps
	$(BIN)/pytest -q -p no:cacheprovider -s tests/conformance

# ruff (lint and format) on everything, mypy strict on the package (pyproject.toml [tool.mypy]).
lint: $(VENV)/.installed
	$(BIN)/ruff check services tests clients
	$(BIN)/ruff format --check services tests clients
	$(BIN)/mypy

# Fault injection (docs/reliability.md): short = the CI subset (scenarios 1, 4, 5, 6, one run
# each, < 10 min); `make chaos LONG=1` = all nine scenarios, three seeds each, the broker-pause
# soak (docs/worker.md "Rebalances"), then `make dr`.
# SEED=S reruns a seed.
chaos: deps
ifeq ($(LONG),1)
	$(BIN)/python -m tests.chaos --long $(if $(SEED),--seed $(SEED))
	OPSMANTIK_BROKER_PAUSE_ROUNDS=5 $(BIN)/pytest -q -p no:cacheprovider -s tests/integration/test_worker_broker_pause.py
	$(MAKE) --no-print-directory dr  # the database-loss long form belongs to the long chaos run too
else
	OPSMANTIK_CHAOS=1 $(if $(SEED),OPSMANTIK_CHAOS_SEED=$(SEED)) $(BIN)/pytest -q -p no:cacheprovider -s tests/chaos
endif

# Database loss, long form (docs/reliability.md "When the database is lost"): the primary lost
# under load with a synchronous standby, 20 s per phase (make test runs 3 s), the outbox window
# without a standby (not in make test), then the figures of docs/results/2026-12-06-database-loss.md;
# private stacks on free ports.
dr: deps
	OPSMANTIK_DR=1 OPSMANTIK_DR_PHASE_S=20 $(BIN)/pytest -q -p no:cacheprovider -s tests/integration/test_recovery_standby.py tests/integration/test_recovery_window.py
	PYTHONPATH=. $(BIN)/python -m tests.integration.dr_figures outbox-cost
	PYTHONPATH=. $(BIN)/python -m tests.integration.dr_figures replay

# Scale-out on a real 3-broker KRaft cluster (docs/scaling.md): a private cluster on free ports
# (tests/support/stacks.py), Postgres from the local stack; a partition leader and a
# worker SIGKILLed under load. Heavy (three JVMs, ~3 min): not part of `make test`.
cluster: deps
	$(BIN)/opsmantik stack up
	OPSMANTIK_CLUSTER=1 $(BIN)/pytest -q -p no:cacheprovider -s tests/cluster

# Benchmarks (docs/benchmarks.md; a full run writes docs/results/bench-latest.md): a private Kafka +
# Postgres on free ports, wrk as the load generator. `make bench QUICK=1` is the < 2 min quick
# run (writes .local/bench/quick.md); `make test` runs every scenario once in its smallest form
# (tests/bench/test_bench_smoke.py, `python -m tests.bench --smoke`).
bench: deps .local/.bench-installed
	$(BIN)/python -m tests.bench $(if $(filter 1,$(QUICK)),--quick) $(if $(ONLY),--only $(ONLY))

# Producer client, long form (docs/client.md): 100,000 events through two gateway SIGKILLs and a
# broker stop, on a private Kafka + Postgres (free ports, a fresh directory). `make test`
# runs the bounded form (clients/python/tests/test_client.py).
client-soak: deps
	OPSMANTIK_CLIENT_SOAK=1 $(BIN)/pytest -q -p no:cacheprovider -s clients/python/tests/test_client_soak.py

stack-up: deps
	$(BIN)/opsmantik stack up

stack-down:
	$(BIN)/opsmantik stack down

clean: stack-down
	rm -rf .local $(VENV)
