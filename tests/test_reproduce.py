"""`calbench reproduce` (arms, seeds, stages, the selection rule, publishing) and the shipped
reference models."""

from __future__ import annotations

import json
import random
import shutil

import pytest

import calbench.core.models as models
import calbench.reproduce as reproduce
from calbench.cli import main
from calbench.core.chain_sum import stratified_train_items
from calbench.core.errors import UsageError
from calbench.core.models import REFERENCE_DIR, REFERENCE_MODELS, resolve_model
from calbench.core.runs import summarize_records
from calbench.reproduce_publish import publish
from calbench.reproduce_recipe import (
    CONF_ARGS,
    SELECTION_RULE,
    SNAPSHOT_STEPS,
    arms,
    choose_step,
)

CONF_FLAGS = ("--conf-grad", "--conf-entropy", "--conf-weight")
V1 = ("smollm2-135m-warmup", "smollm2-135m-rlvr", "smollm2-135m-rlcr")


def _dry(capsys, tmp_path, *extra: str) -> dict[str, str]:
    """{command name: printed command} of a dry run."""
    args = ["reproduce", "--dry-run", "--out", str(tmp_path / "ref")]
    args += ["--results", str(tmp_path / "res"), "--leaderboard", str(tmp_path / "lb"), *extra]
    assert main(args) == 0
    lines = [x.split("] ", 1)[1] for x in capsys.readouterr().out.splitlines() if "] " in x]
    named = dict(x.split(": ", 1) for x in lines)
    assert len(named) == len(lines)  # every command has its own name (and log file)
    return named


def _flag(cmd: str, flag: str) -> str:
    words = cmd.split()
    return words[words.index(flag) + 1]


def test_dry_run_prints_every_arm_seed_and_stage(capsys, tmp_path):
    ref = tmp_path / "ref"
    cmds = _dry(capsys, tmp_path, "--stages", "warmup,rl,select,eval", "--tasks", "chain_sum")
    # one warm-up per seed, each on its own seed
    for s, name in enumerate(("warmup", "warmup-seed1", "warmup-seed2")):
        assert _flag(cmds[name], "--seed") == str(s) and _flag(cmds[name], "--out") == str(
            ref / name
        )
    # seed 0's RLVR and RLCR: RL_STEPS in legs of 20, each leg resuming the same folder
    for arm in ("rlvr", "rlcr"):
        for k in SNAPSHOT_STEPS:
            c = cmds[f"{arm}-step{k}"]
            assert _flag(c, "--steps") == str(k) and _flag(c, "--seed") == "0"
            assert _flag(c, "--out") == str(ref / arm)
            assert _flag(c, "--model") == str(ref / "warmup" / "adapter")
    rlvr, rlcr = cmds[f"rlvr-step{SNAPSHOT_STEPS[-1]}"], cmds[f"rlcr-step{SNAPSHOT_STEPS[-1]}"]
    # RLVR as in the paper: correctness only, sequence-level credit, no confidence options
    assert _flag(rlvr, "--method") == "rlvr" and "--no-split-credit" in rlvr
    assert not any(f in rlvr for f in CONF_FLAGS)
    assert " ".join(CONF_ARGS) in rlcr and "--no-split-credit" not in rlcr
    # same data, steps, batch, lr, KL: what is left once each arm's own flags are taken out
    common = rlvr.replace("--method rlvr", "").replace(" --no-split-credit", "")
    common = common.replace(str(ref / "rlvr"), "OUT")
    assert common == rlcr.replace("--method rlcr", "").replace(
        " " + " ".join(CONF_ARGS), ""
    ).replace(str(ref / "rlcr"), "OUT")
    # the selection reads RLCR's copies on the validation split, never the test split
    for k in SNAPSHOT_STEPS:
        c = cmds[f"select-step{k}"]
        assert _flag(c, "--tasks") == "chain_sum_val" and _flag(c, "--limit") == "200"
        assert _flag(c, "--model") == str(ref / "rlcr" / "snapshots" / f"step{k}")
    # the other arms train straight to the chosen step (K before it is chosen)
    for s in (1, 2):
        for arm in ("rlvr", "rlcr"):
            c = cmds[f"{arm}-seed{s}"]
            assert _flag(c, "--seed") == str(s) and _flag(c, "--steps") == "K"
            assert _flag(c, "--model") == str(ref / f"warmup-seed{s}" / "adapter")
            assert (arm == "rlvr") != any(f in c for f in CONF_FLAGS)
    ppo = cmds[f"rlcr-ppo-step{SNAPSHOT_STEPS[-1]}"]  # in snapshots beside RLVR and RLCR
    assert _flag(ppo, "--algo") == "ppo" and _flag(ppo, "--method") == "rlcr"
    assert _flag(ppo, "--lr") == _flag(rlcr, "--lr") and _flag(ppo, "--seed") == "0"
    assert not any(n.startswith("rlvr-entropy") for n in cmds)  # the ablation is opt-in
    # evals: base, warm-up, 2 arms × 3 seeds, PPO; a seed-s model on seed s's test pool
    evals = {n: c for n, c in cmds.items() if n.startswith("eval-")}
    assert len(evals) == 9
    assert _flag(evals["eval-smollm2-135m-rlcr-seed2-chain_sum"], "--seed") == "2"
    assert "--seed" not in evals["eval-smollm2-135m-rlcr-chain_sum"]
    assert not ref.exists()  # a dry run writes nothing


def test_ablation_and_seeds_flags(capsys, tmp_path):
    cmds = _dry(capsys, tmp_path, "--stages", "rl", "--seeds", "0", "--ablation")
    assert {n for n in cmds if "seed" in n} == set()
    c = cmds["rlvr-entropy"]
    assert _flag(c, "--method") == "rlvr" and " ".join(CONF_ARGS) in c
    assert "--no-split-credit" not in c
    for bad in ("3", "0,x", ""):
        assert main(["reproduce", "--dry-run", "--seeds", bad]) == 2


def test_runs_without_seed_0_use_the_published_selection(capsys, tmp_path, monkeypatch):
    # a later session's --seeds 1,2 has no runs/reference of seed 0: only what was published
    monkeypatch.setattr(reproduce, "REFERENCE_DIR", tmp_path / "reference")
    assert main(["reproduce", "--dry-run", "--seeds", "1", "--stages", "select"]) == 2
    assert "include seed 0" in capsys.readouterr().err
    (tmp_path / "reference" / "rlcr").mkdir(parents=True)
    shipped = tmp_path / "reference" / "rlcr" / "selection.json"
    shipped.write_text(json.dumps({"chosen_step": 60, "rule": SELECTION_RULE}))
    cmds = _dry(capsys, tmp_path, "--seeds", "1", "--stages", "select,rl")
    assert _flag(cmds["rlcr-seed1"], "--steps") == "60" and "rlcr" not in cmds
    # a choice made under another recipe's rule is not reused
    shipped.write_text(json.dumps({"chosen_step": 100, "rule": "RLCR trains 120 steps ..."}))
    assert main(["reproduce", "--dry-run", "--seeds", "1", "--stages", "select"]) == 1
    assert "another recipe's rule" in capsys.readouterr().err
    # with seed 0 in the run, only its own selection counts (it may be a new run of seed 0)
    cmds = _dry(capsys, tmp_path, "--seeds", "0,1", "--stages", "rl")
    assert _flag(cmds["rlcr-seed1"], "--steps") == "K"


def test_overlapped_stages_evaluate_ready_models_while_others_train(capsys, tmp_path, monkeypatch):
    # rl + publish + eval form one queue: in a dry run its order shows training first
    cmds = list(_dry(capsys, tmp_path, "--seeds", "0,1", "--stages", "rl,publish,eval"))
    assert cmds.index("rlcr-seed1") < cmds.index("eval-smollm2-135m-rlcr-seed1-chain_sum")
    # not a dry run and nothing selected yet: an error, not a silent skip of every eval (the
    # snapshot legs, which would train for real, stand aside; a warm-up above the floor)
    monkeypatch.setattr(reproduce, "_train_in_snapshots", lambda *a: None)
    info = tmp_path / "ref" / "warmup" / "adapter" / "calbench_train.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"final_eval": {"eval_accuracy": 0.4}}))
    args = ["reproduce", "--out", str(tmp_path / "ref"), "--seeds", "0"]
    assert main([*args, "--stages", "rl,publish,eval"]) == 1
    assert "select stage" in capsys.readouterr().err


def test_runner_graph_waits_only_on_its_dependency_and_reports_failures(tmp_path):
    import threading

    from calbench.reproduce_runner import Runner

    events: list[str] = []
    release = threading.Event()

    def job(name: str, wait: bool = False, fail: bool = False):
        def fn() -> None:
            if wait:
                assert release.wait(10)
            events.append(name)
            if fail:
                raise RuntimeError(name)

        return fn

    def free() -> None:  # runs beside "train" although listed after its dependents' dependency
        events.append("free")
        release.set()

    r = Runner(tmp_path, 2, dry_run=False)
    r.graph(
        [("train", job("train", wait=True), ()), ("e1", job("e1"), ("train",)), ("free", free, ())]
    )
    assert events.index("free") < events.index("train") < events.index("e1")
    # a job waits for every job it names
    events.clear()
    r.graph([("p", job("p"), ()), ("q", job("q"), ()), ("both", job("both"), ("p", "q"))])
    assert events[-1] == "both" and set(events) == {"p", "q", "both"}
    events.clear()
    release.set()
    with pytest.raises(RuntimeError, match="bad"):
        r.graph(
            [
                ("bad", job("bad", fail=True), ()),
                ("after", job("after"), ("bad",)),
                ("other", job("other"), ()),
            ]
        )
    assert "after" not in events and "other" in events
    # the last running job fails with dependents (and theirs) waiting: its own error is raised
    events.clear()
    with pytest.raises(RuntimeError, match="last"):
        r.graph(
            [
                ("last", job("last", fail=True), ()),
                ("a", job("a"), ("last",)),
                ("b", job("b"), ("a",)),
            ]
        )
    assert events == ["last"]
    with pytest.raises(Exception, match="wait on each other"):
        r.graph([("x", job("x"), ("y",)), ("y", job("y"), ("x",))])


def test_unknown_stage_or_task_is_a_usage_error(capsys):
    assert main(["reproduce", "--dry-run", "--stages", "warmup,bogus"]) == 2
    assert main(["reproduce", "--dry-run", "--tasks", "nope"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_every_arm_has_a_registered_name_and_a_valid_config():
    import argparse

    from calbench.train.cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for arm in arms([0, 1, 2], ablation=True):
        assert REFERENCE_MODELS[arm.spec] == arm.name
        ns = parser.parse_args(["--model", "m", "--out", "o", *arm.train_args(40)])
        cfg = build_config(ns)
        assert (cfg.steps, cfg.seed) == (40, arm.seed)
        # a flag the arm's config lacks would be dropped silently (PPO has no --beta)
        fields = set(vars(cfg))
        for word in arm.args:
            if word.startswith("--") and word not in ("--method", "--algo", "--no-split-credit"):
                assert word[2:].replace("-", "_") in fields, (arm.name, word)


def test_training_in_legs_sees_the_questions_one_run_would():
    # The rl stage trains to 20, 40, ... steps by resuming: step t must get the same questions
    # whatever --steps says, i.e. the trainer's question list for n steps is a prefix of longer.
    short = stratified_train_items(20 * 16, 0)
    assert short == stratified_train_items(120 * 16, 0)[: len(short)]


def _row(step, acc, ece, auroc, parse=1.0):
    return {"step": step, "accuracy": acc, "ece": ece, "auroc": auroc, "parse_rate": parse}


def test_selection_rule_on_a_synthetic_table():
    table = [
        _row(20, 0.36, 0.050, 0.55),  # low ECE but does not rank: AUROC < 0.80
        _row(40, 0.38, 0.120, 0.84),
        _row(60, 0.40, 0.090, 0.86),  # best accuracy
        _row(80, 0.37, 0.060, 0.88),  # 3 points below the best: still a candidate -> chosen
        _row(100, 0.36, 0.040, 0.90),  # 4 points below: excluded although best ECE
        _row(120, 0.41, 0.070, 0.82, parse=0.90),  # parse rate < 95%: excluded (and its acc)
    ]
    step, why = choose_step(table)
    assert step == 80 and "0.060" in why
    # ties (at 3 decimals) go to fewer steps, whatever the input order
    tied = [_row(60, 0.40, 0.0701, 0.85), _row(40, 0.40, 0.0704, 0.81)]
    assert choose_step(tied)[0] == 40
    # nobody reaches AUROC 0.80: the highest AUROC among the accurate ones
    flat = [_row(20, 0.40, 0.05, 0.60), _row(40, 0.40, 0.10, 0.70), _row(60, 0.30, 0.1, 0.79)]
    assert choose_step(flat) == (40, choose_step(flat)[1]) and "no AUROC" in choose_step(flat)[1]
    # undefined AUROC / ECE (one confidence, all wrong) never wins; no parse >= 95%: all count
    odd = [_row(20, 0.40, None, None, 0.5), _row(40, 0.39, 0.2, 0.81, 0.5)]
    assert choose_step(odd)[0] == 40
    with pytest.raises(ValueError):
        choose_step([_row(20, 0.4, None, None)])
    # the rule in the module docstring is the rule applied and recorded
    assert " ".join(SELECTION_RULE.split()) in " ".join(reproduce.__doc__.split())


def _val_run(folder, step, rng):
    """A chain_sum_val run folder as calbench eval writes it: metrics.json from the real
    summarizer over 200 records, manifest complete."""
    run = folder / "select" / f"step{step}" / f"step{step}-abc123" / "chain_sum_val" / "tags"
    run.mkdir(parents=True)
    p = {20: 0.5, 40: 0.9}[step]  # step 40 states confidences that track correctness
    recs = []
    for i in range(200):
        c = rng.random() < 0.35
        q = round(min(0.9, max(0.1, (0.8 if c else 0.1) * p + 0.35 * (1 - p))), 1)
        recs.append({"id": f"chain_sum/val/{i}", "correct": c, "confidence": q})
    summary = summarize_records(recs, n_bootstrap=20)
    (run / "metrics.json").write_text(json.dumps(summary))
    snap = folder / "rlcr" / "snapshots" / f"step{step}"
    snap.mkdir(parents=True)
    (snap / "adapter_model.safetensors").write_bytes(bytes([step]) * 64)
    model_info = {"weights_sha256": models.weights_hash(snap)}
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "model_info": model_info}))


def test_select_stage_reads_the_val_runs_and_records_the_choice(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "SNAPSHOT_STEPS", (20, 40))
    out, rng = tmp_path / "ref", random.Random(0)
    for step in (20, 40):
        _val_run(out, step, rng)
    assert main(["reproduce", "--out", str(out), "--stages", "select", "--seeds", "0"]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["chosen_step"] == 40 and sel["rule"] == SELECTION_RULE
    assert [c["step"] for c in sel["checkpoints"]] == [20, 40]
    assert all(c["n"] == 200 and 0 < c["accuracy"] < 1 for c in sel["checkpoints"])
    times = json.loads((out / "reproduce_times.json").read_text())
    assert "select" in times["per_stage_s"] and times["previous"] == []
    # done: a rerun reads the choice back, and the times file keeps the earlier invocation
    assert main(["reproduce", "--out", str(out), "--stages", "select", "--seeds", "0"]) == 0
    assert "step 40 already chosen" in capsys.readouterr().out
    assert len(json.loads((out / "reproduce_times.json").read_text())["previous"]) == 1
    # a run of other weights (the arm retrained since) does not count
    snap = out / "rlcr" / "snapshots" / "step20"
    assert reproduce._val_metrics(out / "select" / "step20", snap) is not None
    (snap / "adapter_model.safetensors").write_bytes(b"retrained")
    assert reproduce._val_metrics(out / "select" / "step20", snap) is None
    (snap / "adapter_model.safetensors").write_bytes(bytes([20]) * 64)
    # a val run of the wrong size is refused, not compared
    (out / "selection.json").unlink()
    m = next((out / "select" / "step20").rglob("metrics.json"))
    m.write_text(json.dumps({**json.loads(m.read_text()), "n": 150}))
    assert main(["reproduce", "--out", str(out), "--stages", "select", "--seeds", "0"]) == 1


def _fake_run(folder, sub, steps, configured):
    d = folder / sub
    d.mkdir(parents=True)
    shutil.copy(REFERENCE_DIR / "rlcr" / "adapter_config.json", d)
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (d / "trainer_state.pt").write_bytes(b"x")
    info = {"config": {"steps": configured, "seed": 0}, "method": "rlcr", "algo": "grpo"}
    info |= {"steps": steps, "wall_time_s": 60.0, "git_commit": "abc"}
    (d / "calbench_train.json").write_text(json.dumps(info))
    (folder / "log.jsonl").write_text("".join(f'{{"step": {i}}}\n' for i in range(1, 121)))
    (folder / "config.json").write_text(json.dumps({"steps": 120}))


def test_publish_ships_each_arm_at_the_chosen_step(tmp_path):
    out, dest = tmp_path / "runs", tmp_path / "reference"
    _fake_run(out / "warmup", "adapter", 40, 40)
    for arm in ("rlvr", "rlcr", "rlcr-ppo"):
        for k in (20, 40):
            _fake_run(out / arm, f"snapshots/step{k}", k, k)
    _fake_run(out / "rlvr-seed1", "checkpoint", 30, 40)  # killed at 30 of 40: a checkpoint only
    _fake_run(out / "rlcr-seed1", "adapter", 40, 40)
    (out / "selection.json").write_text('{"chosen_step": 40}')
    names = ["warmup", "rlvr", "rlcr", "rlcr-ppo", "rlvr-seed1", "rlcr-seed1"]
    assert publish(out, arms([0, 1]), 40, dest) == names
    for name in names:
        files = {p.name for p in (dest / name).iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= files
        assert {"train_log.jsonl", "train_config.json"} <= files
        assert "trainer_state.pt" not in files
        assert ("selection.json" in files) == (name != "warmup")
    log = (dest / "rlcr" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 40  # the snapshot's log ends at its step, not at the run's 120
    assert json.loads((dest / "rlcr" / "train_config.json").read_text())["steps"] == 40
    card = (dest / "rlcr" / "README.md").read_text()
    assert "--steps 40" in card and SELECTION_RULE[:60] in card and "stopped early" not in card
    assert "stopped early" in (dest / "rlvr-seed1" / "README.md").read_text()
    with pytest.raises(Exception, match="no adapter to publish as rlvr-seed2"):
        publish(out, arms([0, 1, 2]), 40, dest)


def test_eval_stage_reruns_a_result_of_other_weights(capsys, tmp_path):
    res = tmp_path / "res"
    run = res / "smollm2-135m-rlcr" / "chain_sum" / "tags"
    run.mkdir(parents=True)
    current = models.weights_hash(REFERENCE_DIR / "rlcr")
    for sha, expect in ((current, None), ("0" * 64, "--overwrite")):
        manifest = {"status": "complete", "model_info": {"weights_sha256": sha}}
        (run / "manifest.json").write_text(json.dumps(manifest))
        cmds = _dry(capsys, tmp_path, "--stages", "eval", "--tasks", "chain_sum", "--seeds", "0")
        c = cmds.get("eval-smollm2-135m-rlcr-chain_sum")
        assert (c is None) if expect is None else c.endswith(expect)


@pytest.mark.parametrize("spec", sorted(REFERENCE_MODELS))
def test_shipped_reference_models_are_small_adapters_on_the_alias(spec):
    folder = REFERENCE_DIR / REFERENCE_MODELS[spec]
    if spec not in V1 and not folder.exists():
        pytest.skip(f"{spec} is not trained yet (reference experiment v2)")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "smollm2-135m"
    assert (folder / "adapter_model.safetensors").stat().st_size <= 10_000_000
    assert (folder / "README.md").is_file() and (folder / "train_log.jsonl").is_file()


def test_a_registered_but_untrained_name_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "REFERENCE_DIR", tmp_path)
    with pytest.raises(UsageError, match="calbench reproduce"):
        resolve_model("smollm2-135m-rlcr-seed2", hash_weights=False)


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
    args = ["reproduce", "--out", str(tmp_path / "ref"), "--stages", "rl", "--seeds", "0"]
    assert main(args) == 1
    err = capsys.readouterr()
    assert "2.0%" in err.err and "calbench train" not in err.out
    info.write_text(json.dumps({"final_eval": {"eval_accuracy": WARMUP_MIN_ACCURACY + 0.01}}))
    assert check_warmup(run) == pytest.approx(WARMUP_MIN_ACCURACY + 0.01)
    info.write_text("{broken")
    with pytest.raises(Exception, match="no finished warm-up"):
        check_warmup(run)


def test_leaderboard_stage_also_draws_the_side_by_side_diagrams(capsys, tmp_path):
    cmds = _dry(capsys, tmp_path, "--stages", "leaderboard", "--tasks", "chain_sum")
    plot = cmds["plot-chain_sum"]
    assert all(f"smollm2-135m-{m}/chain_sum" in plot for m in ("warmup", "rlvr", "rlcr"))
    assert plot.endswith(str(tmp_path / "lb" / "figures" / "reference_chain_sum.png"))
