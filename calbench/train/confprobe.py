"""What a trained model's confidence *distribution* says, beside its greedy confidence.

``calbench eval`` decodes greedily, so a run records the most likely confidence (the mode). RL
shapes the whole distribution. This probe reads it back: for each record of a finished
``chain_sum`` run whose confidence was written as ``0.d``, it feeds the run's own prompt and
response up to ``<confidence>0.`` to a model and takes π(d) over the ten digits, renormalised,
and its mean E[q] = Σ_d π(d)·d/10. It reports accuracy, the greedy and expected confidences'
mean, spread, Brier and AUROC, and both per difficulty bin — the diagnosis of "does it not know,
or does greedy decoding hide it?".

    python -m calbench.train.confprobe MODEL results/<model>/chain_sum/tags [--limit N]

MODEL is usually the model that wrote the run; another one (e.g. a training checkpoint) reads
the same responses, a cheap look at how its confidence moved. One forward pass per record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calbench.core.chain_sum import chain_sum_items, difficulty_bin
from calbench.core.errors import UsageError
from calbench.core.records import RecordError, read_samples
from calbench.metrics import auroc, brier
from calbench.train.config import RunConfig
from calbench.train.credit import DIGITS
from calbench.train.policy import load_policy, render_prompt


def digit_distributions(model: str, records: list[dict], threads: int = 1) -> list[dict]:
    """Per record with a ``0.d`` confidence: correct, greedy q, π(d) (10 floats), E[q], bin."""
    torch.set_num_threads(max(1, threads))
    pol = load_policy(RunConfig(model=model, threads=threads))
    tok, lm = pol.tokenizer, pol.causal_lm.eval()
    items = {it["id"]: it for it in chain_sum_items("test", 500)}
    digit_ids = tok.convert_tokens_to_ids(list(DIGITS))
    out = []
    for r in records:
        resp, q = r.get("response") or "", r.get("confidence")
        at = resp.lower().rfind("<confidence>")
        if at < 0 or q is None or r["id"] not in items:
            continue
        text = (
            render_prompt(tok, items[r["id"]]["question"], r.get("elicitation", "tags"))
            + resp[: at + len("<confidence>")]
            + "0."
        )
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids.to(pol.device)
        with torch.no_grad():
            p = lm(input_ids=ids).logits[0, -1].float().softmax(-1)[digit_ids].cpu().numpy()
        p = p / p.sum()
        out.append(
            {
                "id": r["id"],
                "correct": bool(r["correct"]),
                "greedy": float(q),
                "pi": p.tolist(),
                "expected": float((p * np.arange(10) / 10).sum()),
                "bin": difficulty_bin(items[r["id"]]["meta"]),
            }
        )
    return out


def summary(rows: list[dict]) -> dict[str, Any]:
    y = np.array([r["correct"] for r in rows], float)
    res: dict[str, Any] = {"n": len(rows), "accuracy": float(y.mean()) if len(rows) else None}
    for key in ("greedy", "expected"):
        c = np.array([r[key] for r in rows], float)
        res[key] = {
            "mean": float(c.mean()),
            "std": float(c.std()),
            "brier": brier(y, c),
            "auroc": float(auroc(y, c)),
        }
    res["bins"] = {}
    for b in sorted({r["bin"] for r in rows}):
        sel = [r for r in rows if r["bin"] == b]
        res["bins"][b] = {
            "n": len(sel),
            "accuracy": float(np.mean([r["correct"] for r in sel])),
            "greedy": float(np.mean([r["greedy"] for r in sel])),
            "expected": float(np.mean([r["expected"] for r in sel])),
        }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m calbench.train.confprobe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("model", help="alias, HF folder or adapter folder")
    ap.add_argument("run", help="a chain_sum run folder (with samples.jsonl)")
    ap.add_argument("--limit", type=int, default=None, help="first N records only")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    samples = Path(args.run) / "samples.jsonl"
    try:
        if not samples.is_file():
            raise UsageError(f"{samples}: no such file (pass a finished chain_sum run folder)")
        records = [r for r in read_samples(samples) if r.get("task") == "chain_sum"]
        if not records:
            raise UsageError(f"{samples}: no chain_sum records")
        rows = digit_distributions(args.model, records[: args.limit], args.threads)
    except (UsageError, RecordError) as e:
        print(f"confprobe: {e}", file=sys.stderr)
        return 2
    s = summary(rows)
    print(json.dumps(s, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
