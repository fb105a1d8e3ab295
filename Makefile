# headrace — everyday commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup test lint dev demo demo-down bench

# The venv is (re)built when pyproject.toml changes; the stamp keeps `make test` fast.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

## setup: virtualenv in .venv with headrace and its dev tools
setup: $(VENV)/.installed

## test: the whole suite; starts its own Kafka unless HEADRACE_BOOTSTRAP is set
test: setup
	$(BIN)/pytest -q

## lint: ruff (lint + format check) and mypy
lint: setup
	$(BIN)/ruff check headrace tests examples bench
	$(BIN)/ruff format --check headrace tests examples bench
	$(BIN)/mypy headrace

## dev: set up; a local Kafka on 127.0.0.1:9092, every topic, every headrace service
dev: setup
	$(BIN)/headrace dev up

## demo: set up, start Kafka + every service + the order-processing example, run three orders
demo: setup
	$(BIN)/python examples/order-processing/demo.py

## demo-down: stop the demo's processes, every service and Kafka (headrace dev down)
demo-down: setup
	$(BIN)/headrace dev down

## bench: every bench/*.py against HEADRACE_BOOTSTRAP, or the dev Kafka (started if needed)
bench: setup
	@if [ -z "$$HEADRACE_BOOTSTRAP" ]; then $(BIN)/headrace dev kafka up; fi
	@set -e; for f in bench/[!_]*.py; do \
		[ -e "$$f" ] || continue; \
		echo "== $$f"; $(BIN)/python "$$f"; \
	done
