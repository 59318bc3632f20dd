"""Helpers of benchmarks/gpu_check.sh: a random-weight model of SmolLM2-135M's shape, calbench
commands run in-process with their peak GPU memory, and the throughput their outputs record.

    python benchmarks/gpu_check.py prepare artifacts/gpu-check/smollm2-shape   # needs the model
    python benchmarks/gpu_check.py build SRC OUT --device cuda               # random weights
    python benchmarks/gpu_check.py need vllm lm_eval                        # exit 2 if absent
    python benchmarks/gpu_check.py run --stats S.json -- eval --model ...    # calbench in-process
    python benchmarks/gpu_check.py report S1.json S2.json ...                # the summary table
    python benchmarks/gpu_check.py wheels .whl --have have.txt   # wheels for a machine offline

``prepare`` copies the embedded SmolLM2-135M-Instruct's config and tokenizer (≈3.5 MB, no
weights) so that they can travel to a machine that cannot fetch a model; ``build`` makes a
``LlamaForCausalLM`` of exactly that config with seeded random weights. Random weights answer
nonsense (accuracy 0, no parsed confidence) and rarely emit EOS, so responses run to
``--max-new-tokens``: the numbers are throughput and memory, not quality.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Everything of the model folder except its weights.
SHAPE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


def prepare(out: Path) -> None:
    from calbench.core.models import resolve_model

    src = Path(resolve_model("smollm2-135m", hash_weights=False).path)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in SHAPE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
            total += (out / name).stat().st_size
    if not (out / "config.json").is_file() or not (out / "tokenizer.json").is_file():
        sys.exit(f"gpu_check: {src} lacks config.json or tokenizer.json")
    print(f"gpu_check: {out}: config and tokenizer of {src} ({total / 1e6:.1f} MB, no weights)")


def build(src: Path, out: Path, device: str, dtype: str | None, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no CUDA device")
    config = LlamaConfig.from_pretrained(src)  # every dimension as the real model has it
    torch_dtype = getattr(torch, dtype or ("float32" if device == "cpu" else "bfloat16"))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch_dtype)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    tok = AutoTokenizer.from_pretrained(src)
    # one real forward pass on the device: the model runs before anything is written
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"].to(device)
    with torch.no_grad():
        gen = model.generate(
            ids, max_new_tokens=4, do_sample=False, pad_token_id=config.pad_token_id
        )
    if gen.shape[1] <= ids.shape[1]:
        sys.exit("gpu_check: the random model generated nothing")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in SHAPE_FILES[1:]:  # config.json is the one save_pretrained wrote (with dtype)
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    print(
        json.dumps(
            {
                "model": str(out),
                "device": device,
                "dtype": str(torch_dtype),
                "params": n_params,
                "layers": config.num_hidden_layers,
                "hidden": config.hidden_size,
                "vocab": config.vocab_size,
                "build_s": round(time.perf_counter() - t0, 2),
            }
        )
    )


def need(modules: list[str]) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"gpu_check: missing Python packages: {', '.join(missing)} (install calbench with "
            f"its extras, or carry wheels: docs/gpu.md)",
            file=sys.stderr,
        )
        sys.exit(2)


class _SmiSampler:
    """Peak GPU memory in use on the device (nvidia-smi, every 0.5 s): counts every process,
    vLLM's engine workers included, which torch's counters in this process do not see."""

    def __init__(self) -> None:
        self.peak_mib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                used = max(int(x) for x in out.split())
                self.peak_mib = max(self.peak_mib or 0, used)
            except (OSError, ValueError, subprocess.SubprocessError):
                return  # no nvidia-smi: the field stays None
            self._stop.wait(0.5)

    def __enter__(self) -> _SmiSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def run_cli(argv: list[str], stats_path: Path) -> int:
    """``calbench ARGV`` in this process (so torch's peak-memory counter sees its tensors)."""
    import torch

    from calbench.cli import main

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with _SmiSampler() as smi:
        rc = main(argv)
    stats: dict[str, Any] = {
        "command": "calbench " + " ".join(argv),
        "rc": rc,
        "wall_s": round(time.perf_counter() - t0, 2),
        "torch_max_memory_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20)
        if cuda
        else None,
        "nvidia_smi_peak_mib": smi.peak_mib,
        **_throughput(argv),
    }
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats), flush=True)
    return rc


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _throughput(argv: list[str]) -> dict[str, Any]:
    """Generated tokens per second as the run's own files record them."""
    if argv[0] == "eval":
        from calbench.core.runs import find_run_dirs

        out = _flag(argv, "--output") or "results"
        tokens, seconds = 0, 0.0
        runs = []
        for d in find_run_dirs([out]):
            man = json.loads((d / "manifest.json").read_text())
            recs = [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines() if x]
            n_tok = sum(int((r.get("tokens") or {}).get("response") or 0) for r in recs)
            tokens += n_tok
            seconds += float(man.get("wall_seconds") or 0)
            runs.append(
                {
                    "run": str(d),
                    "n": len(recs),
                    "response_tokens": n_tok,
                    "wall_s": man.get("wall_seconds"),
                }
            )
        return {
            "runs": runs,
            "response_tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        }
    if argv[0] == "train":
        log = Path(_flag(argv, "--out") or "") / "log.jsonl"
        if not log.is_file():
            return {}
        steps = [json.loads(x) for x in log.read_text().splitlines() if x]
        steps = [s for s in steps if "event" not in s and "rollout_tokens_per_s" in s]
        timed = steps[1:] or steps  # the first step warms up kernels and caches
        return {
            "steps": len(steps),
            "rollout_tokens_per_s": round(
                sum(s["rollout_tokens_per_s"] for s in timed) / len(timed), 1
            )
            if timed
            else None,
            "step_s": round(sum(s.get("step_s", 0.0) for s in timed) / len(timed), 2)
            if timed
            else None,
        }
    return {}


def dependency_closure(root: str = "calbench") -> dict[str, str]:
    """Every distribution ``root`` needs (its extras' own needs followed), name -> installed
    version, as this environment resolved them."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}

    def walk(name: str, extras: tuple[str, ...] = ()) -> None:
        key = canonicalize_name(name)
        if key in found:
            return
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return  # a marker-only or platform-specific need this environment skipped
        found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in ("", *extras)
            )
            if wanted:
                walk(req.name, tuple(req.extras))

    walk(root)
    found.pop(canonicalize_name(root), None)
    return found


def wheels(out: Path, have: Path, python_version: str) -> None:
    """Wheels of calbench's needs that the target lacks (``have``: the names it has, separated
    by commas, spaces or lines), pinned to this environment's versions: the target's binary
    wheel where the index has one, else one built here from the sdist when it is pure Python,
    else the sdist itself (built there: it needs a C compiler on the target)."""
    from packaging.utils import canonicalize_name

    present = {canonicalize_name(x) for x in have.read_text().replace(",", " ").split()}
    need = {n: v for n, v in dependency_closure().items() if n not in present}
    print(f"gpu_check: {len(need)} packages to carry: {' '.join(sorted(need))}")
    pip = [sys.executable, "-m", "pip", "-q"]
    target = [
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *[
            f"--platform={p}"
            for p in (
                "manylinux_2_28_x86_64",
                "manylinux_2_17_x86_64",
                "manylinux2014_x86_64",
                "manylinux1_x86_64",
            )
        ],
    ]
    failed, sdist = [], []
    for name, version in sorted(need.items()):
        spec = f"{name}=={version}"
        ok = (
            subprocess.run(
                [
                    *pip,
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    *target,
                    "-d",
                    str(out),
                    spec,
                ],
                capture_output=True,
            ).returncode
            == 0
        )
        if not ok:
            before = set(out.glob("*.whl"))
            built = (
                subprocess.run(
                    [*pip, "wheel", "--no-deps", "-w", str(out), spec], capture_output=True
                ).returncode
                == 0
            )
            new = set(out.glob("*.whl")) - before
            if not built or not all(w.name.endswith("-none-any.whl") for w in new):
                for w in new:  # compiled here, for this Python: useless there
                    w.unlink()
                sdist.append(spec)
                if (
                    subprocess.run(
                        [*pip, "download", "--no-deps", "--no-binary=:all:", "-d", str(out), spec],
                        capture_output=True,
                    ).returncode
                    != 0
                ):
                    failed.append(spec)
    files = [f for f in out.iterdir() if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    print(f"gpu_check: {out}: {len(files)} files, {total / 2**20:.1f} MiB")
    if sdist:
        print(f"gpu_check: sdists, built on the target (needs a C compiler): {' '.join(sdist)}")
    if failed:
        sys.exit(f"gpu_check: nothing to carry for: {' '.join(failed)}")


def report(paths: list[Path]) -> None:
    print(f"{'command':<60} {'rc':>3} {'wall s':>8} {'tok/s':>9} {'torch MiB':>10} {'smi MiB':>8}")
    for p in paths:
        s = json.loads(p.read_text())
        tps = s.get("tokens_per_s") or s.get("rollout_tokens_per_s")
        print(
            f"{s['command'][:60]:<60} {s['rc']:>3} {s['wall_s']:>8} {tps!s:>9} "
            f"{s.get('torch_max_memory_allocated_mib')!s:>10} {s.get('nvidia_smi_peak_mib')!s:>8}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("out", type=Path)
    p = sub.add_parser("build")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", help="float32 | bfloat16 (default float32 on cpu, else bfloat16)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("need")
    p.add_argument("modules", nargs="+")
    p = sub.add_parser("run")
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("report")
    p.add_argument("stats", nargs="+", type=Path)
    p = sub.add_parser("wheels")
    p.add_argument("out", type=Path)
    p.add_argument(
        "--have", type=Path, required=True, help="file naming the packages the target already has"
    )
    p.add_argument("--python-version", default="3.12", help="the target's Python (3.12)")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.out)
    elif a.cmd == "build":
        build(a.src, a.out, a.device, a.dtype, a.seed)
    elif a.cmd == "need":
        need(a.modules)
    elif a.cmd == "run":
        argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
        sys.exit(run_cli(argv, a.stats))
    elif a.cmd == "wheels":
        wheels(a.out, a.have, a.python_version)
    else:
        report(a.stats)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # calbench from this checkout where it is not installed
    main()
