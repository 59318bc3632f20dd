"""Question sources for calbench's tasks: each loader returns items
``{"id", "question", "gold", "meta"}`` — the gold already reduced to what the grader compares.

Hub loaders are the real ones (``datasets.load_dataset``); every hub dataset can also be read from
local files (``--data-dir`` / ``$CALBENCH_DATA_DIR``) because the hub is not always reachable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from calbench.errors import UsageError
from calbench.grade import gsm8k_gold


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    d = explicit or os.environ.get("CALBENCH_DATA_DIR")
    return Path(d).expanduser() if d else None


def _find(root: Path, *candidates: str) -> Path | None:
    for c in candidates:
        if (root / c).is_file():
            return root / c
    return None


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UsageError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return out


def load_gsm8k(data_dir_: str | None = None, split: str = "test", **_: object) -> list[dict]:
    """GSM8K (openai/gsm8k, config main) from local jsonl if a data dir is given, else the hub."""
    root = data_dir(data_dir_)
    if root is not None:
        path = _find(root, f"gsm8k/{split}.jsonl", f"{split}.jsonl")
        if path is None:
            raise UsageError(
                f"no GSM8K {split}.jsonl under {root} (looked for gsm8k/{split}.jsonl and "
                f"{split}.jsonl)"
            )
        rows = _read_jsonl(path)
        source = f"local:{path}"
    else:
        try:
            import datasets

            rows = list(datasets.load_dataset("openai/gsm8k", "main", split=split))
        except Exception as e:
            raise UsageError(
                f"could not load openai/gsm8k from the Hugging Face hub ({type(e).__name__}). "
                "Offline? Pass --data-dir DIR (or set CALBENCH_DATA_DIR) with GSM8K jsonl files, "
                "or use the offline task gsm_symbolic."
            ) from None
        source = "hub:openai/gsm8k/main"
    items = []
    for i, r in enumerate(rows):
        if "question" not in r or "answer" not in r:
            raise UsageError(f"GSM8K row {i} lacks question/answer fields ({source})")
        items.append({
            "id": f"gsm8k/{split}/{i}",
            "question": r["question"],
            "gold": gsm8k_gold(r["answer"]),
            "meta": {"source": source},
        })
    return items


def load_gsm_symbolic(size: int = 500, seed: int = 0, **_: object) -> list[dict]:
    """GSM-Symbolic problems generated offline by reasoning-gym (GSM8K-like templates, new
    numbers), seeded so a run is reproducible."""
    import reasoning_gym

    ds = reasoning_gym.create_dataset("gsm_symbolic", seed=int(seed), size=int(size))
    items = []
    for i, x in enumerate(ds):
        # reasoning-gym appends "Give the result as your final answer. Do not include units.";
        # keep it: it is part of the generated problem.
        items.append({
            "id": f"gsm_symbolic/s{seed}/{i}",
            "question": x["question"],
            "gold": str(x["answer"]).strip(),
            "meta": {"difficulty": x["metadata"].get("difficulty"),
                     "source_index": x["metadata"].get("source_index")},
        })
    return items
