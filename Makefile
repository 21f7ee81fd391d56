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
GENERATE_ARGS ?=
# train
ORDER ?= II
METHOD ?= gift
DATA ?= data
TRAIN_ARGS ?=
# table
METHODS ?= comparison
TABLE_ARGS ?=
# ORDER=mini: the demo's tiny CLIP, reference pool sets and settings, so its finetune and gift runs are reused
MINI_ARGS = --runs demo-out/runs --shards demo-out/shards --clip tiny --clip-weights demo-out/tiny-clip-pretrained.safetensors \
            --iterations 200 --batch-size 32 --synthetic-batch 32 --synthetic-budget 96 --warmup 10 --workers 0
# sharing: STORE is a directory (shared/NFS mount), ssh://[user@]host[:port]/path, https://... (read-only), any fsspec URL
STORE ?=
SET ?=
GEN_ARGS = --model $(MODEL) --out $(OUT) --steps $(STEPS) --guidance $(GUIDANCE) --batch-size $(BATCH) --gpus $(GPUS) \
           $(if $(PER_CLASS),--per-class $(PER_CLASS)) $(GENERATE_ARGS)

.PHONY: help install test lint demo demo-spread generate tasks shards-ls verify push pull store-ls train table data-check bench bench-generate clean-demo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  generate: TASK=$(TASK) MODEL=$(MODEL) OUT=$(OUT) PER_CLASS=<per task> STEPS=$(STEPS) GUIDANCE=$(GUIDANCE) BATCH=$(BATCH) GPUS=$(GPUS) GENERATE_ARGS='$(GENERATE_ARGS)'"
	@echo "  train:    ORDER=$(ORDER) METHOD=$(METHOD) DATA=$(DATA) OUT=$(OUT) TRAIN_ARGS='$(TRAIN_ARGS)'"
	@echo "  sharing:  STORE=<dir | ssh://host/path | https://...> SET=<OUT or OUT/<task>/<hash> (push), STORE/<task>/<hash> (pull)>"
	@echo "  table:    ORDER=$(ORDER) METHODS=$(METHODS) (presets/groups: gift table --list) DATA=$(DATA) OUT=$(OUT) TABLE_ARGS='$(TABLE_ARGS)'"

$(BIN)/gift: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/gift ## Create .venv and install the project with its test extras (torch from the registry)

test: $(BIN)/gift ## Run the test suite (CPU, offline, tiny models; installs sshd for the ssh:// tests if missing)
	@tests/ensure_sshd.sh
	$(BIN)/python -m pytest -q

lint: $(BIN)/gift ## ruff
	$(BIN)/ruff check pipeline shards cli tests

demo: $(BIN)/gift ## The pipeline end to end on tiny built-in models, on CPU
	$(GIFT) demo --out demo-out

demo-spread: $(BIN)/gift ## The demo over seeds 0,1,2: each number as mean ± std -> demo-out/demo-summary.md (re-measure: make clean-demo demo-spread)
	$(GIFT) demo --out demo-out --seed 0,1,2

tasks: $(BIN)/gift ## List tasks, class counts, default images per class and prompt templates
	$(GIFT) tasks

generate: $(BIN)/gift ## Render TASK into OUT/<task>/<spec-hash>/ (MODEL=sd15|tiny|reference:DIR|PATH)
	$(GIFT) generate $(TASK) $(GEN_ARGS)

shards-ls: $(BIN)/gift ## List the shard sets under OUT
	$(GIFT) shards ls $(OUT)

push: $(BIN)/gift ## Publish the verified sets under OUT (or SET) to STORE; resumable, sends only what is missing
	$(if $(STORE),,$(error set STORE=<dir | ssh://host/path>))
	$(GIFT) shards push $(or $(SET),$(OUT)) $(STORE)

store-ls: $(BIN)/gift ## List the sets a STORE holds, with the address to pull each
	$(if $(STORE),,$(error set STORE=<dir | ssh://host/path | https://...>))
	$(GIFT) shards ls $(STORE)

pull: $(BIN)/gift ## Fetch SET=STORE/<task>/<hash> into OUT, checking every sha256 before it is visible
	$(if $(SET),,$(error set SET=STORE/<task>/<hash>, as make store-ls STORE=... lists it))
	$(GIFT) shards pull $(SET) $(OUT)

verify: $(BIN)/gift ## Verify every set under OUT (checksums and every sample)
	@set -e; for m in $(OUT)/*/*/manifest.json; do $(GIFT) shards verify $$(dirname $$m); done

train: $(BIN)/gift ## Continual fine-tuning over ORDER (I|II|mini) with METHOD, data from DATA, sets from OUT
	$(GIFT) train --order $(ORDER) --method $(METHOD) --data-root $(DATA) --shards $(OUT) $(TRAIN_ARGS)

table: $(BIN)/gift $(if $(filter mini,$(ORDER)),demo-out/tiny-clip-pretrained.safetensors) ## Run METHODS over ORDER where not finished -> runs/table-ORDER.md/.csv/.png (mini: under demo-out/)
	$(GIFT) table --order $(ORDER) --methods $(METHODS) $(if $(filter mini,$(ORDER)),$(MINI_ARGS),--data-root $(DATA) --shards $(OUT)) $(TABLE_ARGS)

demo-out/tiny-clip-pretrained.safetensors: | $(BIN)/gift
	$(GIFT) demo --out demo-out

data-check: $(BIN)/gift ## Which MTIL datasets are present under DATA, and how to get the missing ones
	$(GIFT) data check --data-root $(DATA)

bench: $(BIN)/gift ## Every benchmark (generation, training step, data, evaluation) -> BENCHMARKS.md (CPU < 15 min)
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pipeline.bench --out BENCHMARKS.md

bench-generate: $(BIN)/gift ## Only the generation section of BENCHMARKS.md
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pipeline.bench.generate --out BENCHMARKS.md

clean-demo: ## Remove demo-out/
	rm -rf demo-out
