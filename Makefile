# One target per `gift` subcommand; `make help` lists them. Everything runs inside .venv, which
# `make install` creates (and `make test` / `make demo` create on first use).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
GIFT := $(BIN)/gift

# generate
TASK ?= aircraft
MODEL ?= sd15
OUT ?= shards-out
PER_CLASS ?=
STEPS ?= 50
GUIDANCE ?= 7.5
BATCH ?= 16
GPUS ?= 1
# train
ORDER ?= II
METHOD ?= gift
DATA ?= data
TRAIN_ARGS ?=
GEN_ARGS = --model $(MODEL) --out $(OUT) --steps $(STEPS) --guidance $(GUIDANCE) --batch-size $(BATCH) --gpus $(GPUS) \
           $(if $(PER_CLASS),--per-class $(PER_CLASS))

.PHONY: help install test lint demo generate tasks shards-ls verify train data-check bench-generate clean-demo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  generate: TASK=$(TASK) MODEL=$(MODEL) OUT=$(OUT) PER_CLASS=<per task> STEPS=$(STEPS) GUIDANCE=$(GUIDANCE) BATCH=$(BATCH) GPUS=$(GPUS)"
	@echo "  train:    ORDER=$(ORDER) METHOD=$(METHOD) DATA=$(DATA) OUT=$(OUT) TRAIN_ARGS='$(TRAIN_ARGS)'"

$(BIN)/gift: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/gift ## Create .venv and install the project with its test extras (torch from the registry)

test: $(BIN)/gift ## Run the test suite (CPU, offline, tiny models)
	$(BIN)/python -m pytest -q

lint: $(BIN)/gift ## ruff
	$(BIN)/ruff check pipeline shards cli tests

demo: $(BIN)/gift ## The pipeline end to end on tiny built-in models, on CPU
	$(GIFT) demo --out demo-out

tasks: $(BIN)/gift ## List tasks, class counts, default images per class and prompt templates
	$(GIFT) tasks

generate: $(BIN)/gift ## Render TASK into OUT/<task>/<spec-hash>/ (MODEL=sd15|tiny|reference:DIR|PATH)
	$(GIFT) generate $(TASK) $(GEN_ARGS)

shards-ls: $(BIN)/gift ## List the shard sets under OUT
	$(GIFT) shards ls $(OUT)

verify: $(BIN)/gift ## Verify every set under OUT (checksums and every sample)
	@set -e; for m in $(OUT)/*/*/manifest.json; do $(GIFT) shards verify $$(dirname $$m); done

train: $(BIN)/gift ## Continual fine-tuning over ORDER (I|II|mini) with METHOD, data from DATA, sets from OUT
	$(GIFT) train --order $(ORDER) --method $(METHOD) --data-root $(DATA) --shards $(OUT) $(TRAIN_ARGS)

data-check: $(BIN)/gift ## Which MTIL datasets are present under DATA, and how to get the missing ones
	$(GIFT) data check --data-root $(DATA)

bench-generate: $(BIN)/gift ## Generation throughput and write overhead -> BENCHMARKS.md
	$(BIN)/python -m pipeline.bench_generate --out BENCHMARKS.md

clean-demo: ## Remove demo-out/
	rm -rf demo-out
