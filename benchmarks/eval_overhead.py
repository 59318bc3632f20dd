"""How much does `calbench eval --backend hf` (lm-eval underneath) cost over raw transformers?

The same N GSM-Symbolic prompts (calbench's chat prompt, `prefill` elicitation) go through
  A. raw `model.generate` — left padding, batch B, greedy, M new tokens, stop at <|im_end|>;
  B. `calbench eval --backend hf` with the same batch size, greedy, M tokens, a fresh cache.
Each arm runs in its own process (imports + model load + generation + writing), alternating,
R repeats; we report medians, the ratio B/A, the generation-only ratio, and whether the greedy
outputs are identical. Results are appended to BENCHMARKS.md.

    python benchmarks/eval_overhead.py --n 32 --batch-size 16 --max-new-tokens 64 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RAW = r"""
import json, sys, time
t0 = time.time()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from calbench.core.loaders import load_gsm_symbolic
from calbench.core.models import resolve_model
from calbench.core.prompts import build_prompt
n, bs, m, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
path = resolve_model("smollm2-135m", hash_weights=False).path
tok = AutoTokenizer.from_pretrained(path, padding_side="left")
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
items = load_gsm_symbolic(size=max(500, n), seed=0)[:n]
prompts = []
for it in items:
    p = build_prompt(it["question"], "prefill")
    msgs = p.messages + [{"role": "assistant", "content": p.prefill}]
    prompts.append(tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True))
t_gen = time.time()
texts = {}
# longest first, like lm-eval, so padding is similar
order = sorted(range(n), key=lambda i: -len(tok(prompts[i]).input_ids))
stop = tok.convert_tokens_to_ids("<|im_end|>")
with torch.inference_mode():
    for s in range(0, n, bs):
        idx = order[s:s + bs]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        gen = model.generate(**enc, max_new_tokens=m, do_sample=False, eos_token_id=stop,
                             pad_token_id=tok.pad_token_id)
        for j, i in enumerate(idx):
            texts[items[i]["id"]] = tok.decode(gen[j, enc.input_ids.shape[1]:],
                                                skip_special_tokens=True)
t_end = time.time()
json.dump({"total": t_end - t0, "generate": t_end - t_gen, "texts": texts}, open(out, "w"))
"""


def run_raw(n: int, bs: int, m: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "raw.json"
        t = time.time()
        subprocess.run(
            [sys.executable, "-c", RAW, str(n), str(bs), str(m), str(out)],
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        res = json.loads(out.read_text())
        res["wall"] = time.time() - t
        return res


def run_calbench(n: int, bs: int, m: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "calbench.cli",
                "eval",
                "--model",
                "smollm2-135m",
                "--tasks",
                "gsm_symbolic",
                "--limit",
                str(n),
                "--batch-size",
                str(bs),
                "--max-new-tokens",
                str(m),
                "--elicitation",
                "prefill",
                "--output",
                d,
                "--bootstrap",
                "1000",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        wall = time.time() - t
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        run = Path(d) / "smollm2-135m" / "gsm_symbolic" / "prefill"
        recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
        manifest = json.loads((run / "manifest.json").read_text())
        texts = {x["id"]: x["response"][len("<answer>") :] for x in recs}
        return {"wall": wall, "task_wall": manifest["wall_seconds"], "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--write", default=str(REPO / "BENCHMARKS.md"))
    a = ap.parse_args()
    raws, cals = [], []
    for _ in range(a.repeats):
        raws.append(run_raw(a.n, a.batch_size, a.max_new_tokens))
        cals.append(run_calbench(a.n, a.batch_size, a.max_new_tokens))
    raw_wall = statistics.median(r["wall"] for r in raws)
    raw_gen = statistics.median(r["generate"] for r in raws)
    cal_wall = statistics.median(c["wall"] for c in cals)
    cal_task = statistics.median(c["task_wall"] for c in cals)
    same = sum(raws[0]["texts"][k].strip() == cals[0]["texts"][k].strip() for k in raws[0]["texts"])
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    cmd = (
        f"python benchmarks/eval_overhead.py --n {a.n} --batch-size {a.batch_size} "
        f"--max-new-tokens {a.max_new_tokens} --repeats {a.repeats}"
    )
    lines = [
        "",
        f"### eval overhead — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), torch threads default. Command: `{cmd}`. "
        f"SmolLM2-135M fp32, {a.n} gsm_symbolic prompts, batch {a.batch_size}, greedy, "
        f"{a.max_new_tokens} new tokens; medians of {a.repeats} alternating runs, each a fresh "
        "process.",
        "",
        "| measure | raw transformers | calbench eval (lm-eval) | ratio |",
        "|---|---|---|---|",
        f"| whole process (imports, load, generate, write) | {raw_wall:.1f} s | {cal_wall:.1f} s "
        f"| {cal_wall / raw_wall:.2f}x |",
        f"| generation phase (raw: generate loop; calbench: lm-eval run of the task incl. "
        f"grading) | {raw_gen:.1f} s | {cal_task:.1f} s | {cal_task / raw_gen:.2f}x |",
        "",
        f"Identical greedy outputs: {same}/{a.n}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    path = Path(a.write)
    if not path.exists():
        path.write_text("# Benchmarks\n")
    with path.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
