"""calbench's GRPO vs TRL's GRPOTrainer: rollout tokens/s and seconds per optimizer step.

Same model (SmolLM2-135M-Instruct, fp32 weights), same LoRA (r16, α32, all linear layers), same
prompts (calbench's chain_sum prompt), same batch (B questions × G samples), same lengths (EOS is
suppressed until ``--tokens`` so every response has exactly that many tokens), same objective
settings (β = 0: no reference pass; one optimizer step per rollout batch: no old-log-prob pass;
token-level loss), same threads, same process. Phases run A-B-A (calbench, TRL, calbench) so a
change in machine load shows up as a gap between the two calbench phases; the first step of each
phase is a warm-up and is not counted.

    python benchmarks/trainer_bench.py                 # print the results as JSON
    python benchmarks/trainer_bench.py --write         # also update BENCHMARKS.md "Trainer"
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- trainer-bench:start -->", "<!-- trainer-bench:end -->"


def run_calbench(args: argparse.Namespace, out: Path) -> dict:
    from calbench.train.grpo import GRPOConfig, train

    cfg = GRPOConfig(
        out_dir=str(out),
        steps=args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group,
        max_new_tokens=args.tokens,
        min_new_tokens=args.tokens,
        lr=1e-5,
        beta=0.0,
        updates_per_batch=1,
        lora_r=16,
        lora_alpha=32,
        eval_size=0,
        save_every=0,
        threads=args.threads,
        dtype=args.dtype,
        progress=False,
        elicitation="tags",
    )
    train(cfg, overwrite=True)
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "event" not in s][1:]  # drop the warm-up step
    return {
        "step_s": statistics.median(s["step_s"] for s in steps),
        "rollout_s": statistics.median(s["rollout_s"] for s in steps),
        "rollout_tokens_per_s": statistics.median(s["rollout_tokens_per_s"] for s in steps),
        "tokens_per_step": statistics.median(s["response_tokens"] for s in steps)
        * args.prompts
        * args.group,
        "steps_timed": len(steps),
    }


def run_trl(args: argparse.Namespace, out: Path) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback

    from calbench.core.models import resolve_model
    from calbench.train.policy import load_tokenizer
    from calbench.train.trl_support import grpo_trainer

    path = resolve_model("smollm2-135m", hash_weights=False).path
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n = args.prompts * args.group
    trainer = grpo_trainer(
        model,
        method="rlcr",
        n_train=args.steps * args.prompts + 8,
        processing_class=tok,
        peft_config=LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
        output_dir=str(out),
        per_device_train_batch_size=n,
        num_generations=args.group,
        max_completion_length=args.tokens,
        generation_kwargs={"min_new_tokens": args.tokens},
        max_steps=args.steps,
        learning_rate=1e-5,
        beta=0.0,
        num_iterations=1,
        loss_type="dapo",
        logging_steps=1,
        use_cpu=True,
        bf16=args.dtype == "bf16",
        gradient_checkpointing=False,
        save_strategy="no",
        temperature=1.0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    gen_times: list[float] = []
    generate = trainer._generate_single_turn  # time TRL's generation (instrumentation only)

    def timed_generate(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        t = time.perf_counter()
        result = generate(*a, **kw)
        gen_times.append(time.perf_counter() - t)
        return result

    trainer._generate_single_turn = timed_generate
    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **kw):  # noqa: ANN002, ANN003, ANN201
            self.t = time.perf_counter()

        def on_step_end(self, *a, **kw):  # noqa: ANN002, ANN003, ANN201
            step_times.append(time.perf_counter() - self.t)

    trainer.add_callback(StepTimer())
    trainer.train()
    steps, gens = step_times[1:], gen_times[1:]
    tokens = n * args.tokens
    return {
        "step_s": statistics.median(steps),
        "rollout_s": statistics.median(gens),
        "rollout_tokens_per_s": tokens / statistics.median(gens),
        "tokens_per_step": tokens,
        "steps_timed": len(steps),
    }


def write_section(result: dict) -> None:
    c, t = result["calbench"], result["trl"]
    a = result["settings"]
    table = "\n".join(
        [
            START,
            "",
            f"`python benchmarks/trainer_bench.py --write` — {a['date']}, {a['machine']} (shared "
            f"with other jobs), torch {a['torch']}, transformers {a['transformers']}, TRL {a['trl']}, "
            f"{a['threads']} torch threads, {a['dtype']}. SmolLM2-135M-Instruct, LoRA r16 all-linear, {a['prompts']} questions × "
            f"{a['group']} samples × {a['tokens']} tokens per step, β = 0, one optimizer step per "
            f"rollout batch. Median over {c['steps_timed']} timed steps per phase (A-B-A: "
            "calbench, TRL, calbench; the first step of each phase is not timed).",
            "",
            "| trainer | s / optimizer step | rollout s | rollout tokens/s |",
            "| --- | ---: | ---: | ---: |",
            f"| calbench GRPO (phase A) | {c['step_s']:.1f} | {c['rollout_s']:.1f} | "
            f"{c['rollout_tokens_per_s']:.1f} |",
            f"| TRL GRPOTrainer | {t['step_s']:.1f} | {t['rollout_s']:.1f} | "
            f"{t['rollout_tokens_per_s']:.1f} |",
            f"| calbench GRPO (phase A') | {result['calbench_again']['step_s']:.1f} | "
            f"{result['calbench_again']['rollout_s']:.1f} | "
            f"{result['calbench_again']['rollout_tokens_per_s']:.1f} |",
            "",
            f"**Speed-up vs TRL (mean of both calbench phases): {result['step_ratio']:.2f}× per "
            f"optimizer step, {result['rollout_ratio']:.2f}× rollout tokens/s** (target ≥ 1.0×).",
            "",
            "Where it comes from: calbench runs each prompt once per group and repeats its KV cache "
            "(rollout and gradient pass), samples through a copy of the model with the LoRA merged "
            "in, and computes logits only at response positions. TRL pads every (prompt, response) "
            "row and generates through the unmerged PEFT model.",
            "",
            END,
        ]
    )
    bench = ROOT / "BENCHMARKS.md"
    text = bench.read_text() if bench.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S)
    elif "## Trainer" in text:
        text = text.replace("## Trainer", "## Trainer\n\n" + table, 1)
    else:
        text = text.rstrip() + "\n\n## Trainer\n\n" + table + "\n"
    bench.write_text(text)


def _machine() -> str:
    import os

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=2, help="questions per step (B)")
    ap.add_argument("--group", type=int, default=8, help="samples per question (G)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per response")
    ap.add_argument("--steps", type=int, default=3, help="steps per phase (first not timed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is not timed)")
    torch.set_num_threads(args.threads)
    import transformers
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        a = run_calbench(args, Path(tmp) / "calbench_a")
        print("calbench", json.dumps(a), file=sys.stderr, flush=True)
        t = run_trl(args, Path(tmp) / "trl")
        print("trl", json.dumps(t), file=sys.stderr, flush=True)
        a2 = run_calbench(args, Path(tmp) / "calbench_b")
        print("calbench again", json.dumps(a2), file=sys.stderr, flush=True)
    step_c = (a["step_s"] + a2["step_s"]) / 2
    tps_c = (a["rollout_tokens_per_s"] + a2["rollout_tokens_per_s"]) / 2
    result = {
        "settings": {
            **vars(args),
            "date": time.strftime("%Y-%m-%d"),
            "machine": _machine(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "calbench": a,
        "trl": t,
        "calbench_again": a2,
        "step_ratio": t["step_s"] / step_c,
        "rollout_ratio": tps_c / t["rollout_tokens_per_s"],
    }
    print(json.dumps(result, indent=2))
    if args.write:
        write_section(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
