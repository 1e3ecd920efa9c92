# The project's commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PERSONS ?= 3000
SEED    ?= 42
JARS_DIR ?= jars/staged

JARS_STAMP := $(JARS_DIR)/.staged

.PHONY: help install demo test test-fast jars sql-server clean clean-lakehouse

help:
	@echo "make demo   - install, generate $(PERSONS) persons, run every stage, print the summary"
	@echo "make test   - install and run the test suite"
	@echo "make jars   - stage the Delta (and, if reachable, GraphFrames) jars into $(JARS_DIR)"
	@echo "make sql-server - JDBC/ODBC endpoint (Spark Thrift Server) on localhost:10000 over the catalog"
	@echo "make clean  - remove the venv, the lakehouse and generated data"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cdp demo --persons $(PERSONS) --seed $(SEED)

# The SQL-server test needs the staged jars (Maven); the rest of the suite resolves them with Spark.
test: $(STAMP) $(JARS_STAMP)
	CDP_TEST_JARS_DIR=$(abspath $(JARS_DIR)) $(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

sql-server: $(STAMP) $(JARS_STAMP)
	CDP_JARS_DIR=$(abspath $(JARS_DIR)) $(BIN)/cdp sql-server --port 10000

# Stages the jars with Maven so a cluster without Maven Central (or a faster laptop start) can
# use them: export CDP_JARS_DIR=$(JARS_DIR). GraphFrames is tried separately: its absence
# (see README) must not stop Delta from being staged.
jars: $(JARS_STAMP)

$(JARS_STAMP): jars/pom.xml
	mvn -B -q -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath $(JARS_DIR)) -DincludeScope=runtime
	-mvn -B -q -f jars/pom.xml -P graphframes dependency:copy-dependencies -DoutputDirectory=$(abspath $(JARS_DIR)) -DincludeScope=runtime \
	  || echo "GraphFrames jar not reachable from this machine's Maven repositories; staged Delta only."
	touch $(JARS_STAMP)
	@ls $(JARS_DIR)

clean-lakehouse:
	rm -rf lakehouse spark-warehouse metastore_db derby.log

clean: clean-lakehouse
	rm -rf $(VENV) data jars/staged
