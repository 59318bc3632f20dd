"""Saving what a run trained and resuming it: the model folder ``calbench eval`` loads, the
trainer state (step, optimizer, RNGs, reference LoRA) read back with ``weights_only=True``, and
the checks that a folder's checkpoint belongs to the run being started."""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calbench import __version__
from calbench.core.errors import UsageError
from calbench.core.records import atomic_write_json, git_commit
from calbench.train.config import RunConfig
from calbench.train.policy import Policy

TRAINER_STATE = "trainer_state.pt"  # in checkpoint/: step, optimizer, RNGs, reference LoRA


def save_model(
    policy: Policy, folder: Path, info: dict[str, Any], also: Callable[[Path], None] | None = None
) -> None:
    """Save the trained weights so ``calbench eval --model <folder>`` loads them: a PEFT adapter
    whose ``base_model_name_or_path`` is the user's ``--model`` spec (resolved offline by
    :func:`calbench.core.models.resolve_model`), or a full HF folder; plus ``calbench_train.json``.
    ``also(folder)`` writes further files (the trainer state) before the folder is swapped in."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if policy.is_lora:
        for cfg in policy.model.peft_config.values():
            cfg.base_model_name_or_path = policy.base_spec
        # save_embedding_layers=False: the base is an alias, not a path peft could inspect
        policy.model.save_pretrained(tmp, save_embedding_layers=False)
    else:
        policy.model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
    if also is not None:
        also(tmp)
    atomic_write_json(tmp / "calbench_train.json", info)
    # Swap in the new folder only when complete, so a kill never leaves half a checkpoint.
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def run_info(cfg: RunConfig, algo: str, step: int, wall_s: float, **extra: Any) -> dict[str, Any]:
    """What ``calbench_train.json`` records next to saved weights."""
    return {
        "config": cfg.to_dict(),
        "method": cfg.method,
        "algo": algo,
        "steps": step,
        "seed": cfg.seed,
        "wall_time_s": round(wall_s, 2),
        "git_commit": git_commit(),
        "calbench_version": __version__,
        **extra,
    }


# --------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A sampling RNG that depends only on (seed, step), so a resumed run samples as the
    uninterrupted one would have."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g


def rng_state() -> dict[str, Any]:
    """Every RNG's state as ints, floats, lists and uint8 tensors: the types
    ``torch.load(weights_only=True)`` reads (numpy's raw state holds an ndarray, which only a
    full unpickle restores)."""
    version, mt, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "mt": [int(x) for x in mt], "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": [int(x) for x in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["mt"]), py["gauss_next"]))
    np.random.set_state(
        (
            npy["kind"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Trainer state and resume
# --------------------------------------------------------------------------------------------


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of tensors and plain values only, so :func:`load_trainer_state` can read
    it without unpickling objects."""
    torch.save(state, path)


def load_trainer_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's trainer state, read with ``weights_only=True``: a file that holds any
    other pickled object (which a full unpickle would run) is refused with a UsageError."""
    hint = "pass --overwrite (or a new --out) to start the run afresh"
    if not path.is_file():
        raise UsageError(
            f"{path}: missing, so the checkpoint in {path.parent} is incomplete; {hint}"
        )
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        why = re.search(
            r"WeightsUnpickler error:\s*(.*?)(?:\s+was not an allowed|\n\n|$)", str(e), re.S
        )
        reason = why.group(1).strip() if why and why.group(1).strip() else type(e).__name__
        raise UsageError(
            f"{path}: refusing to load: not a tensors-only calbench trainer state "
            f"({reason}); {hint}"
        ) from None
    missing = [
        k for k in ("step", "rng", "optimizer") if not isinstance(state, dict) or k not in state
    ]
    if missing:
        raise UsageError(
            f"{path}: not a calbench trainer state (lacks {', '.join(missing)}); {hint}"
        )
    return state


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoint"


def read_checkpoint_info(out_dir: Path) -> dict[str, Any] | None:
    f = checkpoint_dir(out_dir) / "calbench_train.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(
            f"{f}: not valid JSON ({e}); pass --overwrite (or a new --out) to start the run afresh"
        ) from None


def check_resumable(out_dir: Path, cfg: RunConfig, algo: str) -> dict[str, Any] | None:
    """The checkpoint info to resume from, None to start fresh; UsageError when the folder
    holds a different run."""
    info = read_checkpoint_info(out_dir)
    if info is None:
        return None
    old = info.get("config", {})
    for key in ("model", "method", "full_finetune", "elicitation"):
        if old.get(key) != getattr(cfg, key):
            raise UsageError(
                f"{out_dir} holds a checkpoint of another run ({key}={old.get(key)!r}, now "
                f"{getattr(cfg, key)!r}); pass a new --out or --overwrite"
            )
    if info.get("algo") != algo:
        raise UsageError(
            f"{out_dir} holds a {info.get('algo')} run, not {algo}; pass a new --out or --overwrite"
        )
    return info
