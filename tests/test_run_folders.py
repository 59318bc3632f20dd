"""Run folders of `calbench eval`: safe unique names that stay under --output, one identity per
folder (a different model or settings is refused, never reused), an exclusive lock held by a real
second process, and clean-up of temp files left by killed writes. No model is loaded: the
end-to-end runs talk to a small OpenAI-compatible HTTP server started here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from calbench.cli import main as calbench_main
from calbench.core.errors import UsageError
from calbench.core.models import resolve_model
from calbench.core.records import atomic_write_json
from calbench.core.runs import find_run_dirs
from calbench.eval import runfolder
from calbench.eval.manifest import model_info
from tests.conftest import REPO
from tests.fault_server import FaultServer

CLI = [sys.executable, "-m", "calbench.cli"]
HOSTILE = [
    "..",
    "../../x",
    "<script>",
    "/abs/path",
    "",
    ".",
    ".hidden",
    "a/b",
    "x" * 300,
    "..\\..\\w",
    "mod\x00el",
    "名前",
]


def _names_the_model(body: dict) -> str:
    """The answer names the served model, so the responses show which model produced them."""
    return f"<answer>{body['model']}</answer> <confidence>0.6</confidence>"


@pytest.fixture(scope="module")
def servers():
    """Two OpenAI-compatible servers (two endpoints) for this module's runs."""
    # module-scoped: outlive every test of the module
    with (
        FaultServer(ok_text=_names_the_model, lifetime=1800) as one,
        FaultServer(ok_text=_names_the_model, lifetime=1800) as two,
    ):
        yield one, two


@pytest.fixture()
def server(servers):
    return servers[0]


def eval_args(model: str, srv, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--model",
        model,
        "--backend",
        "openai-chat",
        "--base-url",
        srv.url,
        "--tasks",
        "gsm_symbolic",
        "--limit",
        "2",
        "--max-retries",
        "1",
        "--output",
        str(out),
        "--bootstrap",
        "10",
        *extra,
    ]


def snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file under ``root`` outside ``skip``, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_component_is_one_visible_folder_name(name):
    safe = runfolder.safe_component(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".")  # dot-folders are hidden from the leaderboard
    assert len(safe) <= runfolder.MAX_NAME + 9 and safe.isascii()
    assert safe == runfolder.safe_component(name)  # the same name, the same folder


def test_safe_component_keeps_safe_names_and_never_merges_two():
    for name in (
        "smollm2-135m",
        "smollm2-135m-rlcr",
        "HuggingFaceTB__SmolLM2-135M",
        "base+adapter",
        "gsm_symbolic",
        "tags",
    ):
        assert runfolder.safe_component(name) == name
    names = HOSTILE + ["a_b", "__", "_", "_script_", "x" * 80]
    assert len({runfolder.safe_component(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", HOSTILE)
def test_run_dir_for_stays_under_output(tmp_path, name):
    out = tmp_path / "out"
    d = runfolder.run_dir_for(out, name, name, name)
    assert d.resolve().is_relative_to(out.resolve()) and len(d.relative_to(out).parts) == 3


def test_run_dir_through_a_symlink_out_of_output_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "m").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="outside --output"):
        runfolder.run_dir_for(out, "m", "gsm_symbolic", "tags")


# --- identity: which model made the answers ------------------------------------------------


def _adapter(folder: Path, base: Path, seed: int) -> Path:
    """A PEFT adapter folder in the real layout (config + safetensors weights)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "base_model_name_or_path": str(base),
                "peft_type": "LORA",
                "r": 2,
                "target_modules": ["q_proj"],
            }
        )
    )
    rng = np.random.default_rng(seed)
    save_file(
        {
            "base_model.model.layers.0.q_proj.lora_A.weight": rng.standard_normal((2, 8)).astype(
                np.float32
            )
        },
        str(folder / "adapter_model.safetensors"),
    )
    return folder


@pytest.fixture()
def two_adapters(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": np.ones((4, 4), np.float32)}, str(base / "model.safetensors"))
    return (
        _adapter(tmp_path / "runs" / "a" / "adapter", base, 1),
        _adapter(tmp_path / "runs" / "b" / "adapter", base, 2),
    )


def _manifest(spec: str, backend: str = "hf", **decoding) -> dict:
    """The manifest fields calbench eval writes before a run, for ``spec``."""
    model = resolve_model(spec)
    return {
        "model_info": model_info(SimpleNamespace(model=spec), model),
        "backend": backend,
        "endpoint": None,
        "elicitation": "tags",
        "prompt_template_sha256": "t" * 64,
        "decoding": {
            "backend": backend,
            "max_new_tokens": 24,
            "temperature": 0.0,
            "do_sample": False,
            "seed": 0,
            "dtype": "float32",
            "extra": {},
            **decoding,
        },
    }


def test_adapters_with_one_basename_get_their_own_folders_and_caches(tmp_path, two_adapters):
    a, b = (_manifest(str(p)) for p in two_adapters)
    la, lb = (runfolder.model_label(m["model_info"], "hf") for m in (a, b))
    assert la != lb and la.startswith("base+adapter-") and lb.startswith("base+adapter-")
    da = runfolder.run_dir_for(tmp_path / "out", la, "gsm_symbolic", "tags")
    db = runfolder.run_dir_for(tmp_path / "out", lb, "gsm_symbolic", "tags")
    ka, kb = (runfolder.identity_key(runfolder.run_identity(m)) for m in (a, b))
    assert da != db and runfolder.cache_dir(da, ka) != runfolder.cache_dir(da, kb)


def test_a_folder_holding_another_model_is_refused_naming_both(tmp_path, two_adapters):
    a, b = (_manifest(str(p)) for p in two_adapters)
    run = tmp_path / "run"
    atomic_write_json(run / "manifest.json", {**a, "status": "complete"})
    (run / "samples.jsonl").write_text('{"id": 1, "correct": true, "confidence": 0.5}\n')
    with runfolder.exclusive(run):
        runfolder.prepare(run, a, overwrite=False)  # the same model and settings: resumed
        with pytest.raises(UsageError) as e:
            runfolder.prepare(run, b, overwrite=False)
        msg = str(e.value)
        assert str(two_adapters[0]) in msg and str(two_adapters[1]) in msg and "--overwrite" in msg
        assert (run / "samples.jsonl").exists()  # refused: nothing lost
        for change in ({"max_new_tokens": 8}, {"dtype": "bfloat16"}, {"seed": 1}):
            with pytest.raises(UsageError, match=next(iter(change))):
                runfolder.prepare(run, _manifest(str(two_adapters[0]), **change), False)
        other_template = {**a, "prompt_template_sha256": "u" * 64}
        with pytest.raises(UsageError, match="prompt_template_sha256"):
            runfolder.prepare(run, other_template, False)
        runfolder.prepare(run, b, overwrite=True)
        assert sorted(p.name for p in run.rglob("*")) == [".cache", "run.lock"]


def test_results_without_a_manifest_are_not_overwritten_silently(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    with runfolder.exclusive(run), pytest.raises(UsageError, match="without a manifest.json"):
        runfolder.prepare(run, {"backend": "hf"}, overwrite=False)
    assert (run / "metrics.json").exists()


def test_other_endpoint_is_refused_then_overwrite_regenerates(tmp_path, servers, capsys):
    server, second = servers
    out = tmp_path / "out"
    assert calbench_main(eval_args("m", server, out)) == 0
    run = out / "m" / "gsm_symbolic" / "tags"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"] == "m" and len(manifest["run_identity_sha256"]) == 64
    assert (run / ".cache" / manifest["run_identity_sha256"][:16] / "requests_rank0.db").is_file()
    assert calbench_main(eval_args("m", server, out)) == 0
    assert "Cached requests: 2, Requests remaining: 0" in capsys.readouterr().err
    served = second.count
    assert calbench_main(eval_args("m", second, out)) == 2
    err = capsys.readouterr().err
    assert f"{server.url}/chat/completions' -> '{second.url}/chat/completions'" in err
    assert json.loads((run / "manifest.json").read_text())["endpoint"].startswith(server.url)
    assert calbench_main(eval_args("m", second, out, "--overwrite")) == 0
    assert "Cached requests: 0, Requests remaining: 2" in capsys.readouterr().err
    assert second.count == served + 2  # regenerated by the second server, not read back
    assert json.loads((run / "manifest.json").read_text())["endpoint"].startswith(second.url)


# --- hostile names end to end ----------------------------------------------------------------


def test_hostile_model_names_write_and_delete_nothing_outside_output(tmp_path, server):
    root = tmp_path / "root"
    out = root / "deep" / "out"
    out.mkdir(parents=True)
    # what `..` and `../../x` used to hit, holding a run that --overwrite used to delete
    for victim in (root / "deep" / "gsm_symbolic" / "tags", root / "x" / "gsm_symbolic" / "tags"):
        victim.mkdir(parents=True)
        (victim / "manifest.json").write_text('{"decoding": {"max_new_tokens": 1}}')
        (victim / "samples.jsonl").write_text('{"id": 1, "correct": true, "confidence": 1}\n')
    before = snapshot(tmp_path, out)
    names = ["..", "../../x", "<script>", str(tmp_path / "abs")]
    for name in names:
        assert calbench_main(eval_args(name, server, out, "--overwrite")) == 0, name
    assert snapshot(tmp_path, out) == before
    runs = find_run_dirs([out])  # every run is visible to the leaderboard (none hidden)
    assert len(runs) == len(names)
    assert {
        json.loads((r / "manifest.json").read_text())["model_info"]["spec"] for r in runs
    } == set(names)


# --- one process per run folder ----------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from calbench.eval.runfolder import exclusive
with exclusive(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def test_second_process_on_a_run_folder_exits_2_naming_the_holder(tmp_path, server):
    out = tmp_path / "out"
    run = out / "m" / "gsm_symbolic" / "tags"
    run.mkdir(parents=True)
    holder = _holder(run)
    try:
        held = f"in use by another calbench process \\(pid {holder.pid} on "
        with pytest.raises(UsageError, match=held), runfolder.exclusive(run):
            pass
        r = subprocess.run(
            CLI + eval_args("m", server, out), cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 2, r.stderr[-2000:]
        assert f"pid {holder.pid}" in r.stderr and "Traceback" not in r.stderr
        assert not (run / "manifest.json").exists()  # the refused run wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the kernel released the killed holder's lock: the next run goes ahead
    with runfolder.exclusive(run):
        pass
    assert calbench_main(eval_args("m", server, out)) == 0


# --- temp files of killed writes ---------------------------------------------------------------

KILLED_WRITE = """
import os, signal, sys
from calbench.core import records
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die mid-write, as a kill does
records.write_jsonl(sys.argv[1], [{"id": 1}])
"""


def test_temp_files_of_killed_writes_are_removed_when_a_run_starts(tmp_path, server):
    out = tmp_path / "out"
    run = out / "m" / "gsm_symbolic" / "tags"
    run.mkdir(parents=True)
    r = subprocess.run(
        [sys.executable, "-c", KILLED_WRITE, str(run / "samples.jsonl")],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL
    stale = [p.name for p in run.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".samples.jsonl.")
    keep = [".samples.jsonl.notes", ".notes.txt.abcd1234", "samples.jsonl.abcd1234"]
    for name in keep:
        (run / name).write_text("user file")
    assert calbench_main(eval_args("m", server, out)) == 0
    assert not (run / stale[0]).exists()
    assert all((run / name).exists() for name in keep)


def test_regrade_refuses_a_run_folder_another_process_holds(tmp_path):
    """calbench regrade takes the run folder's lock too (so does calbench import: see
    test_importer): while another process holds it, exit 2 naming it, nothing changed."""
    from tests.fixtures.runs_make import make_run

    run = make_run(tmp_path / "res", model="m")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    holder = _holder(run)
    try:
        r = subprocess.run(
            CLI + ["regrade", str(run)], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr, r.stderr[-2000:]
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
