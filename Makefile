# The project's commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
AIRFLOW_STAMP := $(VENV)/.installed-airflow
PERSONS ?= 3000
BENCH_SIZES ?= 50000
BENCH_FLAGS ?=
SEED    ?= 42
JARS_DIR ?= jars/staged

JARS_STAMP := $(JARS_DIR)/.staged
# Maven repositories besides Maven Central (conf/pipeline.yaml jars.repositories reads the same variable),
# for Spark and for `make jars`. A build machine whose Maven Central serves no GraphFrames keeps a file
# repository of it beside the checkout, in ../shared/maven: used when present, unless set otherwise.
SHARED_MAVEN := $(abspath ../shared/maven)
ifneq ($(wildcard $(SHARED_MAVEN)/io/graphframes),)
CDP_MAVEN_REPOSITORIES ?= file://$(SHARED_MAVEN)
endif
export CDP_MAVEN_REPOSITORIES
MAVEN_SETTINGS := build/maven-settings.xml
# A real single-node Kafka broker (KRaft) for the Kafka source's tests: its jars, from tests/kafka/pom.xml.
KAFKA_JARS_DIR := jars/kafka-broker
KAFKA_STAMP := $(KAFKA_JARS_DIR)/.staged
BUILD_STAMP := $(VENV)/.installed-build
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
UV  := $(BIN)/uv
LOCK_PYTHON ?= 3.11
LOCK_FLAGS = --quiet --generate-hashes --python-version $(LOCK_PYTHON) --python-platform linux \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)

.PHONY: help install lock demo test test-long test-fast bench bench-stream jars package sql-server clean clean-lakehouse FORCE

help:
	@echo "make demo   - install, generate $(PERSONS) persons, run every stage, print the summary"
	@echo "make test   - install and run the test suite"
	@echo "make test-long - the long end-to-end tests: a standalone cluster, concurrent processes on one catalog, onboarding, a role's SQL endpoint (30 min)"
	@echo "make bench  - time every stage at $(BENCH_SIZES) persons against its I/O floor and scipy (BENCH_SIZES=\"50000 200000 1000000\"; BENCH_FLAGS=--no-references: stages and the increment only)"
	@echo "make bench-stream - land mini-program events at $(STREAM_RATES) events/s for $(STREAM_SECONDS) s each; latency from landing to a local webhook (p50/p95/max)"
	@echo "make jars   - stage the Delta, GraphFrames and Derby network jars into $(JARS_DIR)"
	@echo "make package - build dist/: wheel, cdp.zip, jobs, conf, jars, spark.properties for spark-submit on a cluster"
	@echo "make sql-server - JDBC/ODBC endpoint (Spark Thrift Server) on localhost:10000 over the catalog; ROLE=analyst: one role's views"
	@echo "make lock   - re-resolve requirements/*.txt from pyproject.toml (UPGRADE=1: newest allowed versions)"
	@echo "make clean  - remove the venv, the lakehouse and generated data"

# Installs come from the committed locks in requirements/ (every package pinned, with its hashes), so
# every machine installs the same bytes; `make lock` refreshes them on purpose (docs/operations.md).
# The venv's own pip, setuptools and wheel are pinned too, and the project is built without build
# isolation, so nothing floats in from PyPI on the day.
$(BUILD_STAMP): requirements/build.txt
	$(PYTHON) -c 'import sys; v = sys.version_info[:2]; v == (3, 11) or print(f"warning: the locks in requirements/ are resolved for Python 3.11; this is {v[0]}.{v[1]}. Set PYTHON=python3.11, or run make lock LOCK_PYTHON={v[0]}.{v[1]}.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.txt
	touch $(BUILD_STAMP)

$(STAMP): $(BUILD_STAMP) pyproject.toml requirements/dev.txt
	$(PIP) --require-hashes -r requirements/dev.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The Airflow extra (jobs/dags/, tests/test_dag.py) is large: only the test suite installs it, not `make demo`.
$(AIRFLOW_STAMP): $(STAMP) requirements/dev-airflow.txt
	$(PIP) --require-hashes -r requirements/dev-airflow.txt
	touch $(AIRFLOW_STAMP)

# Re-resolves the locks from pyproject.toml's ranges: keeps every pin that still fits and adds what is
# new; UPGRADE=1 moves every package to the newest version the ranges allow. Commit the result only
# after `make test` passes on it. The three project locks agree: dev and runtime are subsets of dev-airflow.
lock: $(BUILD_STAMP)
	$(UV) pip compile pyproject.toml --extra dev --extra airflow $(LOCK_FLAGS) -o requirements/dev-airflow.txt
	$(UV) pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -c requirements/dev-airflow.txt -o requirements/dev.txt
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -c requirements/dev-airflow.txt -o requirements/runtime.txt
	$(UV) pip compile requirements/build.in $(LOCK_FLAGS) -c requirements/dev-airflow.txt -o requirements/build.txt

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cdp demo --persons $(PERSONS) --seed $(SEED)

# The SQL-server test needs the staged jars (Maven); the rest of the suite resolves them with Spark.
# The Kafka source's tests start a real broker from the jars in $(KAFKA_JARS_DIR) (lib/cdp_dev/kafka.py).
# The long multi-process tests (the standalone cluster, the shared catalog under concurrent processes,
# the retailer's onboarding, a role's SQL endpoint) run on their own: make test-long.
test: $(AIRFLOW_STAMP) $(JARS_STAMP) $(KAFKA_STAMP)
	CDP_TEST_JARS_DIR=$(abspath $(JARS_DIR)) CDP_TEST_KAFKA_JARS=$(abspath $(KAFKA_JARS_DIR)) \
	  $(BIN)/pytest -m "not long"

test-long: $(AIRFLOW_STAMP) $(JARS_STAMP) $(KAFKA_STAMP)
	CDP_TEST_JARS_DIR=$(abspath $(JARS_DIR)) CDP_TEST_KAFKA_JARS=$(abspath $(KAFKA_JARS_DIR)) \
	  $(BIN)/pytest -m long

test-fast: $(AIRFLOW_STAMP)
	$(BIN)/pytest -m "not slow"

# Figures for docs/performance.md: build/bench/bench.json and bench.png.
bench: $(STAMP)
	$(BIN)/python -m cdp_dev.bench.pipeline --sizes $(BENCH_SIZES) --out build/bench $(BENCH_FLAGS)

# Figures for docs/performance.md, "Real time": build/bench-stream/bench-stream.json.
STREAM_RATES ?= 200 2000
STREAM_SECONDS ?= 180
bench-stream: $(STAMP)
	$(BIN)/python -m cdp_dev.bench.stream --rates $(STREAM_RATES) --seconds $(STREAM_SECONDS) --out build/bench-stream

# A release folder for spark-submit on a cluster (docs/operations.md, "On a cluster"); includes the
# staged jars when `make jars` has run. dist/ is rebuilt whole: a release holds one build only.
package: $(STAMP)
	rm -rf dist
	$(BIN)/cdp package --out dist

# ROLE=analyst|marketer|steward: that role's endpoint (its views only, password sign-in, audited).
sql-server: $(STAMP) $(JARS_STAMP)
	CDP_JARS_DIR=$(abspath $(JARS_DIR)) $(BIN)/cdp sql-server --port 10000 $(if $(ROLE),--role $(ROLE))

# Stages the jars with Maven so a cluster without Maven Central (or a faster laptop start) can
# use them: export CDP_JARS_DIR=$(JARS_DIR). The repositories of CDP_MAVEN_REPOSITORIES are searched
# besides Maven Central, through a generated settings file (Maven 3 reads repositories from a POM or
# a settings file only).
jars: $(JARS_STAMP)

# The settings file is written anew on every use (FORCE), since CDP_MAVEN_REPOSITORIES may differ
# from one run to the next; the stamps below do not depend on it, so a rewrite rebuilds nothing.
$(MAVEN_SETTINGS): FORCE
	@mkdir -p $(dir $(MAVEN_SETTINGS))
	@{ echo '<settings><profiles><profile><id>cdp-repositories</id><repositories>'; \
	   n=0; for url in $$(echo "$$CDP_MAVEN_REPOSITORIES" | tr ',' ' '); do n=$$((n+1)); \
	     echo "<repository><id>cdp-$$n</id><url>$$url</url></repository>"; done; \
	   echo '</repositories></profile></profiles><activeProfiles><activeProfile>cdp-repositories</activeProfile></activeProfiles></settings>'; \
	 } > $(MAVEN_SETTINGS)

FORCE:

$(JARS_STAMP): jars/pom.xml | $(MAVEN_SETTINGS)
	mvn -B -q -gs $(MAVEN_SETTINGS) -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath $(JARS_DIR)) -DincludeScope=runtime
	touch $(JARS_STAMP)
	@ls $(JARS_DIR)

# The broker's jars are copied into an emptied folder, so a version bump leaves no stale jar on the classpath.
$(KAFKA_STAMP): tests/kafka/pom.xml | $(MAVEN_SETTINGS)
	rm -rf $(KAFKA_JARS_DIR)
	mvn -B -q -gs $(MAVEN_SETTINGS) -f tests/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath $(KAFKA_JARS_DIR)) -DincludeScope=runtime
	touch $(KAFKA_STAMP)

clean-lakehouse:
	-[ -x $(BIN)/cdp ] && [ -f lakehouse/metastore.json ] && $(BIN)/cdp metastore stop
	rm -rf lakehouse spark-warehouse metastore_db derby.log

clean: clean-lakehouse
	rm -rf $(VENV) data jars/staged $(KAFKA_JARS_DIR)
