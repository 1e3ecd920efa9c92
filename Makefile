# The project's commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PERSONS ?= 3000
SEED    ?= 42
JARS_DIR ?= jars/staged

.PHONY: help install demo test test-fast jars clean clean-lakehouse

help:
	@echo "make demo   - install, generate $(PERSONS) persons, run every stage, print the summary"
	@echo "make test   - install and run the test suite"
	@echo "make jars   - stage the Delta (and, if reachable, GraphFrames) jars into $(JARS_DIR)"
	@echo "make clean  - remove the venv, the lakehouse and generated data"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cdp demo --persons $(PERSONS) --seed $(SEED)

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

# Stages the jars with Maven so a cluster without Maven Central (or a faster laptop start) can
# use them: export CDP_JARS_DIR=$(JARS_DIR). GraphFrames is tried separately: its absence
# (see README) must not stop Delta from being staged.
jars:
	mvn -B -q -f jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath $(JARS_DIR)) -DincludeScope=runtime
	-mvn -B -q -f jars/pom.xml -P graphframes dependency:copy-dependencies -DoutputDirectory=$(abspath $(JARS_DIR)) -DincludeScope=runtime \
	  || echo "GraphFrames jar not reachable from this machine's Maven repositories; staged Delta only."
	@ls $(JARS_DIR)

clean-lakehouse:
	rm -rf lakehouse spark-warehouse metastore_db derby.log

clean: clean-lakehouse
	rm -rf $(VENV) data jars/staged
