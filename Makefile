# event-broker-rollout — every command an operator or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
LAB_HOSTS ?= 3
ENV ?= lab
STAGE ?= preflight
CONF ?=
export LAB_STATE ?= /var/lib/event-broker-lab

.PHONY: help setup packages venv artifacts lock lab-up lab-down lab-status lab-cut lab-heal \
        stage demo rollout validate compliance airflow-up airflow-down audit-export audit-verify bench faults \
        test test-unit test-integration lint typecheck clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: packages venv artifacts ## everything a fresh machine needs (idempotent; needs root for the Debian packages)

packages: ## Debian packages: sshd, iproute2, kcat, iperf3, chromium, ...
	@bash lab/install-packages.sh

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@$(VENV)/bin/pip install -q uv==0.13.8
	@$(UV) pip install -q --python $(PY) -r requirements.lock
	@$(UV) pip install -q --python $(PY) --no-deps -e .
	@touch $@

venv: $(VENV)/.installed ## the Python environment, exactly as pinned in requirements.lock

artifacts: ## Kafka and Apicurio Registry archives assembled from Maven Central (cached in .cache/)
	@bash lab/artifacts/build.sh

lock: ## recompile requirements.lock from requirements.txt (pins every transitive package)
	@$(UV) pip compile -q requirements.txt --python-version 3.11 -o requirements.lock

lab-up: venv ## start the lab: LAB_HOSTS network-namespace hosts with sshd (root)
	@bash lab/lab.sh up $(LAB_HOSTS)
	@$(PY) -m event_broker_rollout.lab_connections lab >/dev/null

lab-down: ## stop the lab: no namespace, link, process or mount left
	@bash lab/lab.sh down

lab-status: ## show lab hosts, links and processes
	@bash lab/lab.sh status

lab-cut: ## cut HOST off the network (as a dead link would)
	@bash lab/lab.sh cut $(HOST)

lab-heal: ## bring HOST back
	@bash lab/lab.sh heal $(HOST)

stage: venv ## run one stage DAG in-process: STAGE=<preflight|infrastructure|security|schemas|integration> ENV=lab [CONF='{...}']
	@$(PY) -m event_broker_rollout.cli stage --stage $(STAGE) --env $(ENV) --conf '$(CONF)'

demo: setup lab-up ## the main job: Airflow standalone, the whole rollout of the lab from its REST API, progress, report
	@$(PY) -m event_broker_rollout.cli rollout --env lab --keep-airflow
	@echo "The lab and Airflow keep running for you to explore. Stop both: make airflow-down lab-down"

rollout: venv ## the whole rollout on the project's Airflow (started if needed): ENV=lab [CONF='{"stages": [...], "change_ticket": "..."}']
	@$(PY) -m event_broker_rollout.cli rollout --env $(ENV) --conf '$(CONF)'

validate: venv ## check an environment file and everything it references, touching no host: ENV=lab
	@$(PY) -m event_broker_rollout.cli validate --env '$(ENV)'

compliance: venv ## the compliance re-verification, in-process: ENV=lab
	@$(PY) -m event_broker_rollout.cli stage --stage compliance --env $(ENV) --conf '$(CONF)'

airflow-up: venv ## start the project's Airflow (standalone, SQLite, loopback:8080) and print its login
	@$(PY) -m event_broker_rollout.cli airflow up

airflow-down: ## stop the project's Airflow (its whole process group)
	@test -x $(PY) && $(PY) -m event_broker_rollout.cli airflow down || true

audit-export: venv ## export a run's audit trail: DAG=<dag_id> RUN=<run_id> [LOGS=dir | API=url API_USER=u API_PASSWORD_FILE=f] [PUBLISH=lab]
	@$(PY) -m event_broker_rollout.audit_trail export --dag-id '$(DAG)' --run-id '$(RUN)' \
	  $(if $(API),--api $(API) --user $(API_USER) --password-file $(API_PASSWORD_FILE),--logs $(or $(LOGS),.airflow-server/logs)) \
	  $(if $(PUBLISH),--publish $(PUBLISH))

audit-verify: venv ## check an exported trail and name its first break: TRAIL=reports/<dag_id>/<run_id>/audit-trail.jsonl
	@$(PY) -m event_broker_rollout.audit_trail verify '$(TRAIL)'

BENCH_ARGS ?=

bench: setup lab-up ## benchmarks on the lab: bench/results/<timestamp>.json + .md with a chart [BENCH_ARGS="--first-run"]
	@$(PY) bench/run.py $(BENCH_ARGS)

faults: setup ## fault scenarios on the lab (each detected, recovered, messages lost): bench/results/faults-<timestamp>.json
	@EBR_KEEP_LAB=$${EBR_KEEP_LAB:-0} $(VENV)/bin/pytest tests/faults -q -p no:cacheprovider

lint: venv ## ruff and mypy
	@$(VENV)/bin/ruff check plugins dags tests bench
	@$(VENV)/bin/ruff format --check plugins dags tests bench
	@$(VENV)/bin/mypy

# pytest exits 5 when a selection holds no test; that is not a failure of the suite.
define pytest
	@$(2) $(VENV)/bin/pytest $(1); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc
endef

test-unit: venv ## unit tests (no lab, no root)
	$(call pytest,tests/unit -q)

test-integration: setup ## integration and end-to-end tests against the real lab (root)
	$(call pytest,tests/integration/test_lab.py tests/integration tests/e2e -q)

# Order matters for the lab: its own test first (it ends with the lab down), then the stages in rollout order.
E2E_ORDER := $(foreach s,infrastructure security schemas integration rollout,$(wildcard tests/e2e/test_$(s)_stage.py))
# The fault scenarios that fit the suite's time budget (about 4 min on the already secured lab); the
# rest (broker kills, a full disk, Airflow killed, the security migration) run in `make faults`.
QUICK_FAULTS := $(addprefix tests/faults/test_lab_faults.py::test_,\
	wrong_kafka_credentials_fail_clearly_and_change_nothing changed_host_key_is_refused_never_accepted \
	host_cut_during_preflight)
TEST_ORDER := tests/unit tests/integration/test_lab.py tests/integration $(E2E_ORDER) tests/e2e $(QUICK_FAULTS)

test: setup lint ## every test: lint, unit, integration, end-to-end, the quick fault scenarios
	@mkdir -p test-artifacts
	$(call pytest,$(TEST_ORDER) -q,EBR_FAULT_RESULTS_DIR=test-artifacts)

clean: airflow-down lab-down ## remove generated state (keeps the download cache)
	rm -rf .airflow .airflow-server reports
