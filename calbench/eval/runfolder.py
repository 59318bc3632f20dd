"""Run folders of ``calbench eval``: their names, their identity, and exclusive use.

A run folder is ``OUTPUT/<model>/<task>/<elicitation>/``. Every component is a safe folder
name (:func:`calbench.core.runs.safe_component`): ASCII letters, digits and ``-_.+``, never
starting with a dot (dot-folders are hidden from the leaderboard and ``..`` would climb out
of ``OUTPUT``); a name that had to be changed gets a short hash of the original so two names
never share a folder. A model given as a local path (a PEFT adapter folder, a local HF folder)
also gets a short hash of its weights, because such folders share basenames (the trainer always
writes ``OUT/adapter``).

What a run generates is fixed by its *identity* (:func:`run_identity`): the model's weights
hashes (or, without them, its hub id / served name), backend, endpoint, decoding settings,
prompt template and elicitation. lm-eval's request cache lives under a folder named by the
identity's hash, and :func:`prepare` refuses a folder whose manifest has another identity, so
one model's answers are never reported as another's.

:func:`exclusive` holds ``.cache/run.lock`` (``fcntl.flock``) for the whole run: a second
process on the same folder stops with exit 2 naming the holder; the kernel drops the lock when
its holder dies, so a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calbench.core import runlock
from calbench.core.errors import UsageError
from calbench.core.models import REFERENCE_MODELS
from calbench.core.records import remove_stale_temp_files
from calbench.core.runs import (  # MAX_NAME, safe_component re-exported: core names folders
    MANIFEST,
    MAX_NAME,  # noqa: F401
    METRICS,
    SAMPLES,
    safe_component,
)
from calbench.eval.backends import API_BACKENDS, command_line

# Decoding settings that change what a run generates (batch size does not, for greedy decoding).
DECODING_KEYS = (
    "backend",
    "max_new_tokens",
    "temperature",
    "do_sample",
    "seed",
    "dtype",
    "consistency_k",
    "consistency_temperature",
    "extra",
)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def model_identity(model_info: dict[str, Any], backend: str) -> dict[str, Any]:
    """What names the model's weights: their hashes when known; for an API backend the name the
    server knows; else the hub id or folder."""
    if backend in API_BACKENDS:
        return {"served_name": model_info.get("spec")}
    hashes = {
        k: model_info[k] for k in ("weights_sha256", "base_weights_sha256") if model_info.get(k)
    }
    return hashes or {"path": model_info.get("path") or model_info.get("spec")}


def model_label(model_info: dict[str, Any], backend: str) -> str:
    """The ``<model>`` folder name (also the manifest's ``model``): the readable name, plus a
    short weights hash for a model given as a local path."""
    if backend in API_BACKENDS:
        return safe_component(str(model_info.get("spec")))
    label = safe_component(str(model_info.get("name") or model_info.get("spec")))
    if (
        model_info.get("kind") in ("local", "adapter")
        and model_info.get("spec") not in REFERENCE_MODELS
    ):
        label += "-" + _short_hash(json.dumps(model_identity(model_info, backend), sort_keys=True))
    return label


def run_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields of a manifest that determine what the run generates (works on manifests of
    earlier calbench versions too: every field named here has always been written)."""
    decoding = manifest.get("decoding") or {}
    backend = str(manifest.get("backend"))
    identity = {
        "model": model_identity(manifest.get("model_info") or {}, backend),
        "backend": backend,
        "endpoint": manifest.get("endpoint"),
        "decoding": {k: decoding.get(k) for k in DECODING_KEYS},
        "prompt_template_sha256": manifest.get("prompt_template_sha256"),
        "elicitation": manifest.get("elicitation"),
    }
    # As JSON stores it, so an identity read back from a manifest compares equal.
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def identity_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def cache_dir(run_dir: Path, key: str) -> Path:
    """Where a run with identity hash ``key`` keeps its request caches."""
    return run_dir / ".cache" / key[:16]


def run_dir_for(output: str | os.PathLike, label: str, task: str, elicitation: str) -> Path:
    """``OUTPUT/<label>/<task>/<elicitation>`` with every component made safe; UsageError when
    it would resolve outside ``OUTPUT`` (a symlink inside it pointing elsewhere)."""
    root = Path(output)
    run_dir = root / safe_component(label) / safe_component(task) / safe_component(elicitation)
    if not run_dir.resolve().is_relative_to(root.resolve()):
        raise UsageError(
            f"run folder {run_dir} resolves to {run_dir.resolve()}, outside "
            f"--output {root.resolve()}; remove the symlink or choose another "
            "--output"
        )
    return run_dir


def _model_text(manifest: dict[str, Any], identity: dict[str, Any]) -> str:
    info = manifest.get("model_info") or {}
    where = info.get("adapter") or info.get("spec") or manifest.get("model")
    ids = ", ".join(f"{k} {str(v)[:12]}" for k, v in identity["model"].items())
    return f"{where} ({ids})"


def _describe(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two manifests' identities, as ``field: old -> new``."""
    a, b = run_identity(old), run_identity(new)
    parts = []
    if a["model"] != b["model"]:
        parts.append(f"model: {_model_text(old, a)} -> {_model_text(new, b)}")
    for k in ("backend", "endpoint", "prompt_template_sha256", "elicitation"):
        if a[k] != b[k]:
            parts.append(f"{k}: {a[k]!r} -> {b[k]!r}")
    parts += [
        f"{k}: {a['decoding'][k]!r} -> {b['decoding'][k]!r}"
        for k in DECODING_KEYS
        if a["decoding"][k] != b["decoding"][k]
    ]
    return ", ".join(parts)


def prepare(run_dir: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Make ``run_dir`` ready for a run described by ``manifest`` (the fields
    :func:`run_identity` reads); call it holding :func:`exclusive`.

    A folder holding a run of another identity (or results without a readable manifest) is
    refused with UsageError naming both, unless ``overwrite``: then everything in it except the
    lock is removed. Temp files that killed atomic writes left behind are removed."""
    problem = None
    if (run_dir / MANIFEST).is_file():
        try:
            old = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            problem = f"an unreadable {MANIFEST} ({e})"
        else:
            if run_identity(old) != run_identity(manifest):
                problem = f"a run of another model or settings ({_describe(old, manifest)})"
    elif (run_dir / SAMPLES).exists() or (run_dir / METRICS).exists():
        problem = f"results without a {MANIFEST}"
    if problem:
        if not overwrite:
            raise UsageError(
                f"{run_dir} holds {problem}; pass --overwrite to replace it or "
                "--output to write elsewhere"
            )
        _clear(run_dir)
    remove_stale_temp_files(run_dir, (SAMPLES, METRICS, MANIFEST))


def _clear(run_dir: Path) -> None:
    """Remove everything inside ``run_dir`` except the lock, following no symlink."""
    keep = run_dir / runlock.LOCK
    for entry in run_dir.iterdir():
        if entry == keep.parent:
            for inner in entry.iterdir():
                if inner != keep:
                    _remove(inner)
        else:
            _remove(entry)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock (:func:`calbench.core.runlock.exclusive`) for a ``calbench eval``
    run: the holder is recorded with URL credentials masked."""
    with runlock.exclusive(
        run_dir, command_line(), "wait for it to finish or write elsewhere with --output"
    ):
        yield
