# streamable: `make demo` runs the supply chain on the local stack; `make test` runs the test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STATE ?= .streamable

.PHONY: demo test ui stack down check bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash scripts/bootstrap.sh $(VENV)
	touch $@

stack:
	bash scripts/stack.sh up

demo: venv stack
	$(PY) scripts/demo.py

test: venv stack
	bash scripts/test-deps.sh
	$(VENV)/bin/pytest

check: venv
	$(VENV)/bin/dg check defs

ui: venv stack
	mkdir -p $(STATE)/dagster_home && cp deploy/local/dagster.yaml $(STATE)/dagster_home/dagster.yaml
	DAGSTER_HOME=$(abspath $(STATE))/dagster_home $(VENV)/bin/dg dev --host 127.0.0.1 --port 3000

bench: venv stack
	$(PY) benchmarks/soci_index.py
	$(PY) benchmarks/verify.py
	$(PY) benchmarks/image_parallel.py
	$(PY) benchmarks/backfill.py
	$(PY) benchmarks/backfill_scale.py
	$(PY) benchmarks/span_advice.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/sensor_tick.py
	$(PY) benchmarks/routing.py

down:
	bash scripts/stack.sh down

clean: down
	rm -rf $(STATE)
