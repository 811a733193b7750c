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
# standalone (SQLite, the default) or celery (PostgreSQL, Redis, two Celery workers: make airflow-up EXECUTOR=celery)
EXECUTOR ?= standalone
export LAB_STATE ?= /var/lib/event-broker-lab

.PHONY: help setup packages venv artifacts lock lab-up lab-idp-up lab-idp-down lab-kdc-up lab-kdc-down lab-down lab-status lab-cut lab-heal \
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
	@# Bytecode compiled once here: this machine sets PYTHONDONTWRITEBYTECODE, so otherwise every task
	@# process would compile Airflow and Great Expectations from source (import time halved).
	@$(UV) pip install -q --compile-bytecode --python $(PY) -r requirements.lock
	@$(UV) pip install -q --python $(PY) --no-deps -e .
	@touch $@

# Kafka's client library with Kerberos: the PyPI wheel's librdkafka has no GSSAPI (native/README.md).
$(VENV)/.kerberos-clients: $(VENV)/.installed native/build.sh native/kerberos_ccache_plugin.c
	@PYTHON=$(PY) bash native/build.sh
	@touch $@

venv: $(VENV)/.kerberos-clients ## the Python environment, exactly as pinned in requirements.lock (Kafka's client library built with Kerberos)

artifacts: ## Kafka and Apicurio Registry archives and the lab's Keycloak, assembled from Maven Central (cached in .cache/)
	@bash lab/artifacts/build.sh

lock: ## recompile requirements.lock from requirements.txt (pins every transitive package)
	@$(UV) pip compile -q requirements.txt --python-version 3.11 -o requirements.lock

lab-up: venv ## start the lab: LAB_HOSTS network-namespace hosts with sshd (root)
	@bash lab/lab.sh up $(LAB_HOSTS)
	@$(PY) -m event_broker_devtools.lab_connections lab >/dev/null

lab-idp-up: venv ## the lab's OIDC provider (Keycloak, https://10.77.0.2:8443) for the registries that authenticate through it (after lab-up)
	@$(PY) -m event_broker_devtools.lab_idp up

lab-idp-down: venv ## stop the lab's OIDC provider (lab-down stops it too)
	@$(PY) -m event_broker_devtools.lab_idp down

lab-kdc-up: venv ## the lab's Kerberos KDC (MIT, 10.77.0.2:88) and the keytabs of the environments that authenticate through it (after lab-up)
	@$(PY) -m event_broker_devtools.lab_kdc up

lab-kdc-down: venv ## stop the lab's KDC, keeping its database and keytabs (lab-down stops it too)
	@$(PY) -m event_broker_devtools.lab_kdc down

lab-down: ## stop the lab: no namespace, link, process or mount left
	@bash lab/lab.sh down

lab-status: ## show lab hosts, links and processes
	@bash lab/lab.sh status

lab-cut: ## cut HOST off the network (as a dead link would)
	@bash lab/lab.sh cut $(HOST)

lab-heal: ## bring HOST back
	@bash lab/lab.sh heal $(HOST)

stage: venv ## run one stage DAG in-process: STAGE=<preflight|infrastructure|security|schemas|integration> ENV=lab [CONF='{...}']
	@$(PY) -m event_broker_devtools.cli stage --stage $(STAGE) --env $(ENV) --conf '$(CONF)'

demo: setup lab-up ## the main job: Airflow standalone, the whole rollout of the lab from its REST API, progress, report
	@$(PY) -m event_broker_devtools.cli rollout --env lab --keep-airflow
	@echo "The lab and Airflow keep running for you to explore. Stop both: make airflow-down lab-down"

rollout: venv ## the whole rollout on the project's Airflow (started if needed, left running): ENV=lab [CONF='{"stages": [...], "change_ticket": "..."}']
	@$(PY) -m event_broker_devtools.cli rollout --env $(ENV) --conf '$(CONF)' --executor '$(EXECUTOR)' --keep-airflow

validate: venv ## check an environment file and everything it references, touching no host: ENV=lab
	@$(PY) -m event_broker_devtools.cli validate --env '$(ENV)'

compliance: venv ## the compliance re-verification, in-process: ENV=lab
	@$(PY) -m event_broker_devtools.cli stage --stage compliance --env $(ENV) --conf '$(CONF)'

airflow-up: venv ## start the project's Airflow (standalone, SQLite, loopback:8080; EXECUTOR=celery: PostgreSQL, Redis, 2 workers, :8090) and print its login
	@$(PY) -m event_broker_devtools.cli airflow up --executor '$(EXECUTOR)'

airflow-down: ## stop the project's Airflow (its whole process group; EXECUTOR=celery: every process of the stack, its data removed)
	@test -x $(PY) && $(PY) -m event_broker_devtools.cli airflow down --executor '$(EXECUTOR)' || true

# The lab deployment's trail signing key (generated by lab-up); elsewhere the Airflow connection
# ebr_audit_signing signs, or SIGNING_KEY names a key file (PEM, mode 600).
LAB_SIGNING_KEY := $(LAB_STATE)/secrets/audit-signing.key
SIGNING_KEY ?= $(if $(filter lab%,$(ENV)),$(wildcard $(LAB_SIGNING_KEY)))
# The audit topic is compared only when asked: CLUSTER=<env>, or ENV given on the command line.
CLUSTER ?= $(if $(filter command line,$(origin ENV)),$(ENV))

audit-export: venv ## export a run's trail, signed and chained to ENV's previous one: DAG=<dag_id> RUN=<run_id> ENV=lab [LOGS=dir | API=url API_USER=u API_PASSWORD_FILE=f] [PUBLISH=lab] [SIGNING_KEY=file]
	@$(PY) -m event_broker_devtools.trail_cli export --dag-id '$(DAG)' --run-id '$(RUN)' --env '$(ENV)' \
	  $(if $(API),--api $(API) --user $(API_USER) --password-file $(API_PASSWORD_FILE),--logs $(or $(LOGS),.airflow-server/logs)) \
	  $(if $(SIGNING_KEY),--signing-key '$(SIGNING_KEY)') $(if $(PUBLISH),--publish $(PUBLISH))

audit-verify: venv ## check a trail (default: ENV's newest), its chain and, with ENV=<env> or CLUSTER=<env>, the audit topic; names the first break: [TRAIL=reports/<dag_id>/<run_id>/audit-trail.jsonl] [PUBLIC_KEY=file]
	@$(PY) -m event_broker_devtools.trail_cli verify $(if $(TRAIL),'$(TRAIL)',--env '$(ENV)') \
	  $(if $(PUBLIC_KEY),--public-key '$(PUBLIC_KEY)') $(if $(CLUSTER),--cluster '$(CLUSTER)')

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

# Order matters for the lab: its own test first (it ends with the lab down), then the stages in rollout order,
# then the rollout on the Celery stack (PostgreSQL, two workers) on the rolled-out lab.
# The mTLS and OAUTHBEARER clusters' rollouts run before the controller's, whose last test scans every
# report for secrets.
E2E_ORDER := $(foreach s,infrastructure security schemas integration,$(wildcard tests/e2e/test_$(s)_stage.py)) \
	$(wildcard tests/e2e/test_mtls_rollout.py) $(wildcard tests/e2e/test_oauthbearer_rollout.py) \
	$(wildcard tests/e2e/test_kerberos_rollout.py) \
	$(wildcard tests/e2e/test_rollout_stage.py) \
	$(wildcard tests/e2e/test_celery_stack.py)
# The fault scenarios that fit the suite's time budget (about 4 min on the already secured lab); the
# rest (broker kills, a full disk, Airflow killed, the security migration) run in `make faults`.
QUICK_FAULTS := $(addprefix tests/faults/test_lab_faults.py::test_,\
	wrong_kafka_credentials_fail_clearly_and_change_nothing changed_host_key_is_refused_never_accepted \
	host_cut_during_preflight)
TEST_ORDER := tests/unit tests/integration/test_lab.py tests/integration $(E2E_ORDER) tests/e2e $(QUICK_FAULTS)

test: setup lint ## every test: lint, unit, integration, end-to-end, the quick fault scenarios
	@mkdir -p test-artifacts
	$(call pytest,$(TEST_ORDER) -q --durations=25,EBR_FAULT_RESULTS_DIR=test-artifacts)

clean: airflow-down lab-down ## remove generated state (keeps the download cache)
	@$(MAKE) -s airflow-down EXECUTOR=celery
	rm -rf .airflow .airflow-server reports
