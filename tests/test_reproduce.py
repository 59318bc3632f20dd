"""`calbench reproduce` (recipe, stage selection, publishing) and the shipped reference models."""

from __future__ import annotations

import json
import shutil

import pytest

from calbench.cli import main
from calbench.core.models import REFERENCE_DIR, REFERENCE_MODELS, resolve_model
from calbench.reproduce import RL_ARGS, publish


def test_dry_run_prints_the_recipe_and_both_arms_share_it(capsys, tmp_path):
    assert (
        main(
            [
                "reproduce",
                "--dry-run",
                "--out",
                str(tmp_path / "ref"),
                "--stages",
                "rl,eval",
                "--tasks",
                "chain_sum",
                "--results",
                str(tmp_path / "res"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if "calbench train" in x]
    assert len(lines) == 2  # rlvr and rlcr
    rlvr, rlcr = (x.split(": ", 1)[1] for x in lines)
    # identical except the reward and the output folder
    assert rlvr.replace("rlvr", "X") == rlcr.replace("rlcr", "X")
    assert " ".join(RL_ARGS) in rlcr
    evals = [x for x in out.splitlines() if "calbench eval" in x]
    assert len(evals) == 1 + len(REFERENCE_MODELS)  # untrained base + the reference models
    assert not (tmp_path / "ref").exists()  # a dry run writes nothing


def test_unknown_stage_or_task_is_a_usage_error(capsys):
    assert main(["reproduce", "--dry-run", "--stages", "warmup,bogus"]) == 2
    assert main(["reproduce", "--dry-run", "--tasks", "nope"]) == 2
    assert "bogus" in capsys.readouterr().err


def _fake_run(folder, sub, steps, configured):
    d = folder / sub
    d.mkdir(parents=True)
    shutil.copy(REFERENCE_DIR / "rlcr" / "adapter_config.json", d)
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (d / "trainer_state.pt").write_bytes(b"x")
    (d / "calbench_train.json").write_text(
        json.dumps(
            {
                "config": {"steps": configured, "seed": 0},
                "method": "rlcr",
                "algo": "grpo",
                "steps": steps,
                "wall_time_s": 60.0,
                "git_commit": "abc",
            }
        )
    )
    (folder / "log.jsonl").write_text('{"step": 1}\n')
    (folder / "config.json").write_text("{}")


def test_publish_copies_adapters_and_flags_a_run_stopped_early(tmp_path):
    out, dest = tmp_path / "runs", tmp_path / "reference"
    _fake_run(out / "warmup", "adapter", 40, 50)
    _fake_run(out / "rlvr", "adapter", 120, 120)
    _fake_run(out / "rlcr", "checkpoint", 40, 120)  # killed: only a checkpoint
    publish(out, dest)
    for short in ("warmup", "rlvr", "rlcr"):
        files = {p.name for p in (dest / short).iterdir()}
        assert {
            "adapter_config.json",
            "adapter_model.safetensors",
            "README.md",
            "train_log.jsonl",
            "train_config.json",
        } <= files
        assert "trainer_state.pt" not in files
    assert "stopped early" in (dest / "rlcr" / "README.md").read_text()
    assert "stopped early" not in (dest / "rlvr" / "README.md").read_text()
    # publishing one model (the warm-up, before its RL arms finish) leaves the others alone
    shutil.rmtree(dest / "rlvr")
    publish(out, dest, only=("warmup",))
    assert (dest / "warmup" / "README.md").is_file() and not (dest / "rlvr").exists()


@pytest.mark.parametrize("spec", sorted(REFERENCE_MODELS))
def test_shipped_reference_models_are_small_adapters_on_the_alias(spec):
    folder = REFERENCE_DIR / REFERENCE_MODELS[spec]
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "smollm2-135m"
    assert (folder / "adapter_model.safetensors").stat().st_size <= 10_000_000
    assert (folder / "README.md").is_file() and (folder / "train_log.jsonl").is_file()


def test_reference_alias_resolves_to_its_adapter(smollm2_path):
    r = resolve_model("smollm2-135m-rlcr", hash_weights=False)
    assert r.kind == "adapter" and r.name == "smollm2-135m-rlcr"
    assert r.adapter == str((REFERENCE_DIR / "rlcr").resolve())
    assert r.path == str(smollm2_path)


def test_rl_stage_refuses_a_warmup_at_the_accuracy_floor(tmp_path, capsys):
    from calbench.reproduce import WARMUP_MIN_ACCURACY, check_warmup

    run = tmp_path / "ref" / "warmup"
    (run / "adapter").mkdir(parents=True)
    info = run / "adapter" / "calbench_train.json"
    info.write_text(json.dumps({"final_eval": {"eval_accuracy": 0.02}}))
    # exit 1 (runtime failure) before any RL command runs, saying why
    assert main(["reproduce", "--out", str(tmp_path / "ref"), "--stages", "rl"]) == 1
    err = capsys.readouterr()
    assert "2.0%" in err.err and "calbench train" not in err.out
    info.write_text(json.dumps({"final_eval": {"eval_accuracy": WARMUP_MIN_ACCURACY + 0.01}}))
    assert check_warmup(run) == pytest.approx(WARMUP_MIN_ACCURACY + 0.01)
    info.write_text("{broken")
    with pytest.raises(Exception, match="no finished warm-up"):
        check_warmup(run)


def test_leaderboard_stage_also_draws_the_side_by_side_diagrams(capsys, tmp_path):
    assert (
        main(
            [
                "reproduce",
                "--dry-run",
                "--stages",
                "leaderboard",
                "--tasks",
                "chain_sum",
                "--results",
                str(tmp_path / "res"),
                "--leaderboard",
                str(tmp_path / "lb"),
            ]
        )
        == 0
    )
    plot = [x for x in capsys.readouterr().out.splitlines() if "calbench plot" in x]
    assert len(plot) == 1 and all(
        f"smollm2-135m-{m}/chain_sum" in plot[0] for m in ("warmup", "rlvr", "rlcr")
    )
    assert plot[0].endswith(str(tmp_path / "lb" / "figures" / "reference_chain_sum.png"))
