# One target per `gift` subcommand; `make help` lists them. Everything runs inside .venv, which
# `make install` creates (and `make test` / `make demo` create on first use).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
GIFT := $(BIN)/gift

# generate: TASK=<task> renders one set; without TASK, every set of ORDER's replay pool (default II: what
# `make train` / `make table` read)
TASK ?=
MODEL ?= sd15
OUT ?= shards-out
PER_CLASS ?=
STEPS ?= 50
GUIDANCE ?= 7.5
BATCH ?= 16
GPUS ?= 1
GENERATE_ARGS ?=
# caption (CLTS stage 1a); CAPTIONS=<caption set dir> makes `make generate` render its captions
CAPTIONS_OUT ?= captions-out
CAPTION_ARGS ?=
CAPTIONS ?=
# train
ORDER ?= II
METHOD ?= gift
DATA ?= data
TRAIN_ARGS ?=
# train, table, doctor: where run directories go (mini, mini-cil: the demo's); SEED: train one seed, table one or
# several (0,1,2: every cell mean ± std)
RUNS ?= $(if $(IS_MINI),demo-out/runs,runs)
SEED ?=
DOCTOR_ARGS ?=
# table (METHODS empty: comparison for MTIL orders, seq = finetune icarl gift gift-captions clts for seq-*, cil = Tab. 7 / 8's
# CLIP rows for the other CIL settings)
METHODS ?=
TABLE_ARGS ?=
# ORDER=mini / mini-cil: the demo's tiny CLIP, reference pool sets and settings, so its finetune and gift runs are reused
MINI_COMMON = --shards demo-out/shards --captions demo-out/captions --clip tiny --clip-weights demo-out/tiny-clip-pretrained.safetensors \
              --batch-size 32 --synthetic-batch 32 --synthetic-budget 96 --workers 0
MINI_ARGS = $(MINI_COMMON) $(if $(filter mini,$(ORDER)),--iterations 200 --warmup 10)
# mini-cil's caption "renders" are real digits (the tiny SD is untrained): the --real-renders ablation, for the runs that
# replay caption renders (clts; the table passes it to its clts and gift-captions rows only)
REAL_RENDERS = $(if $(filter mini-cil,$(ORDER)),--real-renders)
IS_MINI = $(filter mini mini-cil,$(ORDER))
MINI_DEMO = $(if $(IS_MINI),demo-out/tiny-clip-pretrained.safetensors)
# the demo's pool sets: real held-out digits (reference generator), 16 per class, 32 px
MINI_GEN_ARGS = --model reference:demo-out/mini-reference --per-class 16 --size 32 --out demo-out/shards --batch-size $(BATCH)
# what every run of ORDER reads: the demo's tiny CLIP and pool for mini / mini-cil, else DATA, OUT and CAPTIONS_OUT
RUN_ARGS = --runs $(RUNS) $(if $(IS_MINI),$(MINI_ARGS),--data-root $(DATA) --shards $(OUT) --captions $(CAPTIONS_OUT)) \
           $(if $(SEED),--seed $(SEED))
DEFAULT_GROUP = $(if $(filter I II mini,$(ORDER)),comparison,$(if $(filter seq-%,$(ORDER)),seq,cil))
# sharing: STORE is a directory (shared/NFS mount), ssh://[user@]host[:port]/path, https://... (read-only), any fsspec URL
STORE ?=
SET ?=
GEN_ARGS = --model $(MODEL) --out $(OUT) --steps $(STEPS) --guidance $(GUIDANCE) --batch-size $(BATCH) --gpus $(GPUS) \
           $(if $(PER_CLASS),--per-class $(PER_CLASS)) $(if $(CAPTIONS),--captions $(CAPTIONS)) $(GENERATE_ARGS)

.PHONY: help install test lint demo demo-spread doctor generate caption tasks settings shards-ls verify push pull store-ls train table data-check bench bench-generate clean-demo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  generate: TASK=<one task> | ORDER=$(ORDER) (no TASK: the order's whole pool; mini, mini-cil: the demo's) MODEL=$(MODEL) OUT=$(OUT) PER_CLASS=<per task> STEPS=$(STEPS) GUIDANCE=$(GUIDANCE) BATCH=$(BATCH) GPUS=$(GPUS) CAPTIONS=<caption set> GENERATE_ARGS='$(GENERATE_ARGS)'"
	@echo "  caption:  TASK=$(or $(TASK),aircraft) DATA=$(DATA) CAPTIONS_OUT=$(CAPTIONS_OUT) CAPTION_ARGS='$(CAPTION_ARGS)'"
	@echo "  train:    ORDER=$(ORDER) METHOD=$(METHOD) DATA=$(DATA) OUT=$(OUT) RUNS=$(RUNS) SEED=<n> TRAIN_ARGS='$(TRAIN_ARGS)'"
	@echo "  doctor:   ORDER=$(ORDER) METHOD=$(METHOD) DATA=$(DATA) OUT=$(OUT) RUNS=$(RUNS) MODEL=$(MODEL) DOCTOR_ARGS='$(DOCTOR_ARGS)'"
	@echo "  sharing:  STORE=<dir | ssh://host/path | https://...> SET=<OUT or OUT/<task>/<hash> (push), STORE/<task>/<hash> (pull)>"
	@echo "  table:    ORDER=$(ORDER) METHODS=$(or $(METHODS),<comparison; CIL: cil>) (presets/groups: gift table --list [--order O]) DATA=$(DATA) OUT=$(OUT) RUNS=$(RUNS) SEED=<n or 0,1,2> TABLE_ARGS='$(TABLE_ARGS)'"
	@echo "  ORDER:    I | II | mini (MTIL), or a CIL setting: cifar100-10|20|50, tinyimagenet-5|10|20, seq-cifar10|100, seq-tinyimg, mini-cil (make settings)"

$(BIN)/gift: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/gift ## Create .venv and install the project with its test extras (torch from the registry)

test: $(BIN)/gift ## Run the test suite (CPU, offline, tiny models; installs sshd for the ssh:// tests if missing)
	@tests/ensure_sshd.sh
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pytest -q

lint: $(BIN)/gift ## ruff
	$(BIN)/ruff check pipeline shards cli tests

demo: $(BIN)/gift ## The pipeline end to end on tiny built-in models, on CPU
	$(GIFT) demo --out demo-out

demo-spread: $(BIN)/gift ## The demo over seeds 0,1,2: each number as mean ± std -> demo-out/demo-summary.md (re-measure: make clean-demo demo-spread)
	$(GIFT) demo --out demo-out --seed 0,1,2

tasks: $(BIN)/gift ## List tasks, class counts, default images per class and prompt templates
	$(GIFT) tasks

settings: $(BIN)/gift ## List the class-incremental settings: dataset, steps, classes per step, class order, pool sets
	$(GIFT) settings

generate: $(BIN)/gift $(if $(TASK),,$(MINI_DEMO)) ## Render every set of ORDER's replay pool (default II), or one TASK (or the captions of CAPTIONS=<set>), into OUT/<task>/<spec-hash>/ (MODEL=sd15|tiny|reference:DIR|PATH)
	$(if $(TASK),$(GIFT) generate $(TASK) $(GEN_ARGS),$(GIFT) generate --order $(ORDER) $(if $(IS_MINI),$(MINI_GEN_ARGS),$(GEN_ARGS)))

caption: $(BIN)/gift ## Caption TASK's chosen training images with BLIP into CAPTIONS_OUT/<task>/<spec-hash>/ (CLTS)
	$(GIFT) caption $(or $(TASK),aircraft) --out $(CAPTIONS_OUT) --data-root $(DATA) $(CAPTION_ARGS)

doctor: $(BIN)/gift $(MINI_DEMO) ## Check everything a run of ORDER needs (weights, datasets, pool sets, disk, GPUs) and its cost; every problem with its fix
	$(GIFT) doctor --order $(ORDER) --method $(METHOD) $(RUN_ARGS) $(if $(filter clts,$(METHOD)),$(REAL_RENDERS)) $(if $(IS_MINI),--model reference:demo-out/mini-reference --captioner tiny,--model $(MODEL)) \
	  --make-hint 'make generate ORDER=$(ORDER)' $(DOCTOR_ARGS)

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

train: $(BIN)/gift $(MINI_DEMO) ## Continual fine-tuning over ORDER (I|II|mini or a CIL setting) with METHOD, data from DATA, sets from OUT (clts: captions from CAPTIONS_OUT) -> RUNS/
	$(GIFT) train --order $(ORDER) --method $(METHOD) $(RUN_ARGS) $(if $(filter clts,$(METHOD)),$(REAL_RENDERS)) $(TRAIN_ARGS)

table: $(BIN)/gift $(MINI_DEMO) ## Run METHODS over ORDER where not finished (SEED=0,1,2: per seed, mean ± std) -> RUNS/table-ORDER.md/.csv/.png (mini, mini-cil: under demo-out/)
	$(GIFT) table --order $(ORDER) --methods $(or $(METHODS),$(DEFAULT_GROUP)) $(RUN_ARGS) $(REAL_RENDERS) $(TABLE_ARGS)

demo-out/tiny-clip-pretrained.safetensors: | $(BIN)/gift
	$(GIFT) demo --out demo-out

data-check: $(BIN)/gift ## Which MTIL and CIL datasets are present under DATA, and how to get the missing ones
	$(GIFT) data check --data-root $(DATA)

bench: $(BIN)/gift ## Every benchmark (generation, training step, data, evaluation) -> BENCHMARKS.md (CPU < 15 min)
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pipeline.bench --out BENCHMARKS.md

bench-generate: $(BIN)/gift ## Only the generation section of BENCHMARKS.md
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pipeline.bench.generate --out BENCHMARKS.md

clean-demo: ## Remove demo-out/
	rm -rf demo-out
