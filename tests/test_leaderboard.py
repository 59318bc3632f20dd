"""``calbench leaderboard``: ranking rule, unranked rows, the four output formats, escaping,
hostile names."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from calbench.cli import main
from calbench.report.leaderboard import build
from calbench.report.leaderboard_formats import csv_safe, md_escape
from calbench.report.ranking import COLUMNS, rank_label, rank_rows
from tests.fixtures import runs_make

EVIL = '<img src=x onerror="alert(1)"> $x$ | evil'


def _row(
    model: str,
    brier: tuple | None,
    task: str = "t",
    auroc: tuple | None = None,
    *,
    metric: str = "brier",
    reasons: tuple = (),
    ids: frozenset | None = None,
    status: str | None = None,
) -> dict:
    """A row as build_rows makes it; ``ranking`` holds ``metric`` (brier or auroc) given here."""

    def m(t):
        return (
            {"value": None, "lo": None, "hi": None}
            if t is None
            else dict(zip(("value", "lo", "hi"), t, strict=True))
        )

    row = {
        "task": task,
        "model": model,
        "elicitation": "tags",
        "n": 100,
        "run": model,
        "rank": None,
        "rank_shared": False,
        "status": status,
        "_reasons": list(reasons),
        "_ids": ids,
    }
    for k, _, _ in COLUMNS:
        row[k] = m(None)
    row["ranking"] = {
        "metric": metric,
        "policy": "fill=0.5",
        "n": 100,
        **m(brier if metric == "brier" else auroc),
    }
    return row


# ---------------------------------------------------------------------------- ranking rule


def test_rank_shares_only_with_overlapping_row_above() -> None:
    rows = [
        _row("c", (0.20, 0.17, 0.23)),
        _row("a", (0.10, 0.08, 0.12)),
        _row("b", (0.13, 0.11, 0.15)),  # overlaps a
        _row("d", (0.30, 0.28, 0.32)),  # overlaps nothing
        _row("e", None),  # undefined: unranked, last
    ]
    out = rank_rows(rows)
    assert [r["model"] for r in out] == ["a", "b", "c", "d", "e"]
    assert [rank_label(r) for r in out] == ["=1", "=1", "3", "4", "—"]


def test_rank_sharing_chains_down_the_table() -> None:
    # b overlaps a, c overlaps b but not a: the rule compares with the row above, so all share.
    rows = [
        _row("a", (0.10, 0.08, 0.12)),
        _row("b", (0.12, 0.11, 0.14)),
        _row("c", (0.15, 0.135, 0.17)),
        _row("d", (0.5, 0.45, 0.55)),
    ]
    assert [rank_label(r) for r in rank_rows(rows)] == ["=1", "=1", "=1", "4"]


def test_rank_higher_is_better_and_per_task() -> None:
    rows = [
        _row("a", None, auroc=(0.6, 0.55, 0.65), metric="auroc"),
        _row("b", None, auroc=(0.8, 0.75, 0.85), metric="auroc"),
        _row("c", None, task="u", auroc=(0.7, 0.6, 0.8), metric="auroc"),
    ]
    out = rank_rows(rows, "auroc")
    assert [(r["task"], r["model"], r["rank"]) for r in out] == [
        ("t", "b", 1),
        ("t", "a", 2),
        ("u", "c", 1),
    ]


def test_row_without_ci_cannot_be_separated() -> None:
    rows = [_row("a", (0.1, None, None)), _row("b", (0.4, 0.38, 0.42))]
    assert [rank_label(r) for r in rank_rows(rows)] == ["=1", "=1"]


def test_unrankable_rows_listed_last_with_reason() -> None:
    same, other = frozenset({"q1", "q2", "q3"}), frozenset({"q1", "q2"})
    rows = [
        _row("floor", (0.01, 0.0, 0.02), reasons=("accuracy at the floor",), ids=same),
        _row("a", (0.20, 0.18, 0.22), ids=same),
        _row("b", (0.30, 0.28, 0.32), ids=same),
        _row("limit", (0.05, 0.04, 0.06), ids=other),  # best value, but other questions
        _row(
            "live",
            (0.10, 0.09, 0.11),
            ids=same,
            status="running",
            reasons=("run status 'running', not complete",),
        ),
    ]
    out = rank_rows(rows)
    assert [(r["model"], rank_label(r)) for r in out] == [
        ("a", "1"),
        ("b", "2"),
        ("floor", "—"),
        ("limit", "—"),
        ("live", "— (running)"),
    ]
    by = {r["model"]: r for r in out}
    assert by["a"]["unranked_reason"] is None
    assert by["floor"]["unranked_reason"] == "accuracy at the floor"
    assert by["limit"]["unranked_reason"].startswith(
        "different questions: 2 ids, 2 of them among the 3"
    )
    assert "running" in by["live"]["unranked_reason"]
    assert all(by[m]["rank"] is None for m in ("floor", "limit", "live"))


def test_common_questions_are_the_most_common_set() -> None:
    # Two rows on 3 questions, one on 2: the odd one out is unranked, whichever comes first.
    big, small = frozenset("abc"), frozenset("ab")
    rows = [
        _row("s", (0.1, 0.09, 0.11), ids=small),
        _row("b1", (0.2, 0.19, 0.21), ids=big),
        _row("b2", (0.3, 0.29, 0.31), ids=big),
    ]
    assert [(r["model"], r["rank"]) for r in rank_rows(rows)] == [("b1", 1), ("b2", 2), ("s", None)]


def test_rank_rows_rejects_rows_of_another_metric() -> None:
    with pytest.raises(ValueError, match="another ranking metric"):
        rank_rows([_row("a", (0.1, 0.0, 0.2))], "auroc")


def test_unknown_rank_metric_is_usage_error() -> None:
    from calbench.core.errors import UsageError

    with pytest.raises(UsageError):
        rank_rows([_row("a", (0.1, 0.0, 0.2))], "nll_typo")


def test_escapers() -> None:
    assert "|" not in md_escape("a|b").replace("\\|", "")
    assert md_escape("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert md_escape("$x$") == "\\$x\\$"
    assert csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_safe("org/model") == "org/model"


# ---------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> tuple[Path, dict[str, Path], list[dict]]:
    root = tmp_path_factory.mktemp("lb")
    runs = runs_make.make_results(root / "results")
    out = root / "leaderboard"
    rows = build(root / "results", out)
    return out, runs, rows


def test_outputs_exist(board) -> None:
    out, _, _ = board
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "index.html"):
        assert (out / name).is_file(), name
    assert len(list((out / "diagrams").glob("*.svg"))) == 4


def test_json_rows_match_metrics(board) -> None:
    out, runs, _ = board
    rows = json.loads((out / "leaderboard.json").read_text())
    assert isinstance(rows, list) and len(rows) == 4
    for r in rows:
        for key in ("task", "model", "elicitation", "n", "rank"):
            assert key in r
        for k, _, _ in COLUMNS:
            assert set(r[k]) == {"value", "lo", "hi"}, k
    by_model = {(r["model"], r["task"]): r for r in rows}
    good = by_model[("org/good-model", "synthmath")]
    saved = json.loads((runs["good"] / "metrics.json").read_text())["metrics"]
    for k in ("accuracy", "ece", "smooth_ece", "brier", "brier_rel", "brier_res", "auroc", "aurc"):
        assert good[k] == saved[k], k
    assert good["n"] == 200
    # Ranks within each task follow the rule: the overconfident model is last and alone.
    synthmath = [r for r in rows if r["task"] == "synthmath"]
    assert [r["model"] for r in synthmath][-1] == "org/bad-model"
    assert synthmath[0]["rank"] == 1
    assert by_model[("org/good-model", "synthqa")]["rank"] == 1
    values = [r["brier"]["value"] for r in synthmath]
    assert values == sorted(values)
    # Diagram paths are relative and point at files that exist.
    for r in rows:
        assert r["diagram"].startswith("diagrams/") and (out / r["diagram"]).is_file()


def test_markdown_one_table_per_task_escaped(board) -> None:
    out, _, _ = board
    md = (out / "leaderboard.md").read_text()
    assert md.count("## synthmath") == 1 and md.count("## synthqa") == 1
    assert "<img" not in md and "&lt;img" in md
    # The pipe in the model name must not split the table row.
    evil_line = next(line for line in md.splitlines() if "evil" in line)
    assert len(re.findall(r"(?<!\\)\|", evil_line)) == 5 + len(COLUMNS) + 2
    assert "Ranked within each task by Brier" in md


def test_csv_round_trip(board) -> None:
    out, _, rows = board
    with (out / "leaderboard.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    assert {t["model"] for t in table} == {r["model"] for r in rows}
    first = table[0]
    assert float(first["brier"]) == pytest.approx(rows[0]["brier"]["value"], abs=1e-6)
    assert {f"{k}_lo" for k, _, _ in COLUMNS} <= set(first)


def test_html_static_escaped_and_complete(board) -> None:
    out, _, rows = board
    page = (out / "index.html").read_text()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; $x$ | evil" in page
    # Static: nothing fetched from elsewhere (no CDN, no external script or style).
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script src" not in page and "<link" not in page
    assert page.count('<tr data-task="') == 4
    assert page.count('class="diagram-link"') == 4
    for r in rows:
        assert f'href="{r["diagram"]}"' in page
    assert '<option value="synthqa">synthqa</option>' in page


def test_rebuild_is_stable_and_drops_stale_diagrams(board, tmp_path: Path) -> None:
    out, runs, _ = board
    results = runs["good"].parent.parent
    stale = out / "diagrams" / "gone-run-00000000.svg"
    stale.write_text("<svg/>")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["leaderboard", str(results), "--out", str(out)]) == 0
    assert not stale.exists()
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


def test_cli_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2
    assert main(["leaderboard", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_cli_rank_by_and_no_diagrams(board, tmp_path: Path) -> None:
    _, runs, _ = board
    results = runs["good"].parent.parent
    out = tmp_path / "lb"
    assert (
        main(
            ["leaderboard", str(results), "--out", str(out), "--rank-by", "auroc", "--no-diagrams"]
        )
        == 0
    )
    rows = json.loads((out / "leaderboard.json").read_text())
    assert not (out / "diagrams").exists()
    assert all(r["diagram"] is None for r in rows)
    synthmath = [r["auroc"]["value"] for r in rows if r["task"] == "synthmath"]
    assert synthmath == sorted(synthmath, reverse=True)
    assert "Ranked within each task by AUROC (higher is better)" in (out / "index.html").read_text()


# ---------------------------------------------------------------------------- what is ranked


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, list[dict]]:
    """One task with rows the rule must rank, and one of each kind it must not."""
    root = tmp_path_factory.mktemp("mixed")
    res = root / "results"
    make = runs_make.make_run
    make(res, model="org/sparse", overconfidence=0.0, unparsed=0.4, seed=11)
    make(res, model="org/dense", overconfidence=0.05, unparsed=0.0, seed=12)
    make(res, model="org/low-parse", overconfidence=0.0, unparsed=0.7, seed=13)
    make(res, model="org/floor", overconfidence=1.0, seed=14)  # never right
    make(res, model="org/live", overconfidence=0.0, seed=15, status="running")
    make(res, model="org/short", overconfidence=0.0, seed=16, n=150)  # another --limit
    out = root / "lb"
    assert main(["leaderboard", str(res), "--out", str(out), "--no-diagrams"]) == 0
    return out, json.loads((out / "leaderboard.json").read_text())


def _samples(out: Path, row: dict) -> list[dict]:
    path = out.parent / row["run"] / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ranked_on_all_records_with_unparsed_filled(mixed) -> None:
    from calbench import metrics as M

    out, rows = mixed
    for r in rows:
        recs = _samples(out, r)
        y = [bool(x["correct"]) for x in recs]
        filled = [0.5 if x["confidence"] is None else x["confidence"] for x in recs]
        assert r["ranking"]["metric"] == "brier" and r["ranking"]["policy"] == "fill=0.5"
        assert r["ranking"]["n"] == len(recs) == r["n"]
        assert r["ranking"]["value"] == pytest.approx(M.brier(y, filled), abs=1e-12), r["model"]
        # The drop view stays: Brier over the parsed answers, as in metrics.json.
        saved = json.loads((out.parent / r["run"] / "metrics.json").read_text())
        assert r["brier"] == saved["metrics"]["brier"]
    sparse = next(r for r in rows if r["model"] == "org/sparse")
    assert sparse["ranking"]["value"] > sparse["brier"]["value"]  # the fill costs it
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["model"] for r in ranked] == ["org/dense", "org/sparse"]
    assert ranked[0]["ranking"]["value"] < ranked[1]["ranking"]["value"]


def test_unranked_rows_say_why_in_every_format(mixed) -> None:
    out, rows = mixed
    why = {r["model"]: r["unranked_reason"] for r in rows}
    assert why["org/dense"] is None and why["org/sparse"] is None
    assert why["org/low-parse"].startswith("confidence parse rate ")
    assert "below 50%" in why["org/low-parse"]
    assert "accuracy at the floor" in why["org/floor"]
    assert why["org/live"] == "run status 'running', not complete"
    assert why["org/short"].startswith("different questions: 150 ids, 150 of them among the 200")
    assert all(r["rank"] is None for r in rows if why[r["model"]])
    md = (out / "leaderboard.md").read_text()
    live = next(line for line in md.splitlines() if "org/live" in line)
    assert live.startswith("| — \\(running\\) |") and "not complete" in live
    assert "fill=0.5" in md.split("\n")[2] and "Brier, ranked (fill=0.5)" in md
    with (out / "leaderboard.csv").open(newline="") as f:
        table = {t["model"]: t for t in csv.DictReader(f)}
    assert table["org/floor"]["rank"] == "" and "floor" in table["org/floor"]["unranked_reason"]
    assert table["org/live"]["status"] == "running"
    assert table["org/dense"]["ranking_policy"] == "fill=0.5"
    page = (out / "index.html").read_text()
    assert "— (running)" in page and "different questions: 150 ids" in page
    assert 'title="not ranked: confidence parse rate' in page


# ---------------------------------------------------------------------------- hostile names


def hostile_names(tmp_path: Path) -> list[str]:
    """Model/task/elicitation names that would escape ``--out`` if used in a path; the absolute
    one points into ``tmp_path`` so a regression writes nowhere else."""
    return [
        "../../x",
        "<script>alert(1)</script>",
        str(tmp_path / "abs" / "evil"),
        "..",
        "a/../../../b",
    ]


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_hostile_names_write_nothing_outside_out(tmp_path: Path) -> None:
    res = tmp_path / "results"
    HOSTILE = hostile_names(tmp_path)
    for i, name in enumerate(HOSTILE):
        d = runs_make.make_run(res, model=f"m{i}", seed=20 + i)
        manifest = {"model": name, "task": HOSTILE[-1 - i], "elicitation": name, "n": 200}
        (d / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "deep" / "out"
    before = _tree(tmp_path)
    assert main(["leaderboard", str(res), "--out", str(out)]) == 0
    new = _tree(tmp_path) - before
    assert new and all(out in p.parents or p in (out, out.parent) for p in new), new
    diagrams = sorted(p.name for p in (out / "diagrams").iterdir())
    assert len(diagrams) == len(HOSTILE)
    assert all(re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{8}\.svg", n) for n in diagrams), diagrams
    page = (out / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {r["model"] for r in rows} == set(HOSTILE)
    assert all((out / r["diagram"]).resolve().parent == (out / "diagrams").resolve() for r in rows)


def test_one_right_answer_in_a_hundred_is_at_the_floor(tmp_path) -> None:
    # Wilson's upper bound for 1/100 is 0.054, above the 5% floor, yet AUROC would rest on one
    # question: fewer than MIN_EACH_OUTCOME right answers is not ranked either.
    from calbench.core.records import write_jsonl
    from calbench.core.runs import load_run
    from calbench.report.ranking import MIN_EACH_OUTCOME, run_reasons

    def run_with(right: int) -> list[str]:
        d = tmp_path / f"r{right}"
        write_jsonl(
            d / "samples.jsonl",
            [{"id": f"q{i}", "correct": i < right, "confidence": 0.3} for i in range(100)],
        )
        return run_reasons(load_run(d))

    assert any("only 1 right answers" in r for r in run_with(1))
    assert not run_with(MIN_EACH_OUTCOME)
    assert any("wrong answers" in r for r in run_with(100 - MIN_EACH_OUTCOME + 1))


# ---------------------------------------------------------------------------- the "=" test


def _paired_rows(tmp_path: Path, shift: float, *, records: bool = True) -> list[dict]:
    """Two runs on the same 200 questions with the same answers; B's confidences are A's moved
    ``shift`` toward each outcome, so B's Brier is lower on every question."""
    from calbench.core.runs import load_runs
    from calbench.report.leaderboard import build_rows

    recs = runs_make.synthetic_records(
        200, task="synthmath", elicitation="tags", overconfidence=0.0, seed=5, unparsed=0.0
    )
    moved = [
        dict(
            r,
            confidence=min(1.0, r["confidence"] + shift)
            if r["correct"]
            else max(0.0, r["confidence"] - shift),
        )
        for r in recs
    ]
    runs_make.write_run(tmp_path, recs, model="a", metrics=False)
    runs_make.write_run(tmp_path, moved, model="b", metrics=False)
    rows = build_rows(load_runs([tmp_path]))
    if not records:
        for r in rows:
            r["_records"] = None
    return rank_rows(rows)


def test_paired_test_separates_rows_whose_cis_overlap(tmp_path: Path) -> None:
    from calbench import metrics as M
    from calbench.report.ranking import CI_OVERLAP, PAIRED, PAIRED_N_BOOTSTRAP, PAIRED_SEED

    b, a = _paired_rows(tmp_path, 0.03)
    assert (b["model"], a["model"]) == ("b", "a")
    # The premise: the marginal 95% CIs overlap, so the old rule would share the rank.
    assert b["ranking"]["hi"] > a["ranking"]["lo"]
    assert [rank_label(r) for r in (b, a)] == ["1", "2"]
    vs = a["rank_vs_above"]
    assert vs["test"] == PAIRED and vs["shared"] is False and vs["n_paired"] == 200
    assert (vs["n_bootstrap"], vs["seed"], vs["policy"]) == (
        PAIRED_N_BOOTSTRAP,
        PAIRED_SEED,
        "fill=0.5",
    )
    assert vs["diff"] == pytest.approx(a["ranking"]["value"] - b["ranking"]["value"])
    assert 0 < vs["lo"] <= vs["diff"] <= vs["hi"]
    assert b["rank_vs_above"] is None and a["rank_test"] is None and b["rank_test"] is None
    # The same numbers from the metrics package directly.
    al = M.align_records(_samples_of(tmp_path, "a"), _samples_of(tmp_path, "b"))
    ref = M.paired_bootstrap(
        al["correct_a"],
        al["conf_a"],
        al["correct_b"],
        al["conf_b"],
        "brier",
        n_bootstrap=PAIRED_N_BOOTSTRAP,
        seed=PAIRED_SEED,
        policy="fill=0.5",
    )
    assert (vs["lo"], vs["hi"]) == pytest.approx((ref["lo"], ref["hi"]))
    # Without the records only the marginal CIs are left, and they cannot separate the rows.
    b2, a2 = _paired_rows(tmp_path / "again", 0.03, records=False)
    assert [rank_label(r) for r in (b2, a2)] == ["=1", "=1"]
    assert a2["rank_vs_above"] == {"test": CI_OVERLAP, "shared": True}
    assert a2["rank_test"] == b2["rank_test"] == CI_OVERLAP


def _samples_of(root: Path, model: str) -> list[dict]:
    path = root / model / "synthmath-tags-0" / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_identical_runs_share_the_rank_by_the_paired_test(tmp_path: Path) -> None:
    from calbench.report.ranking import PAIRED, tie_note

    first, second = _paired_rows(tmp_path, 0.0)
    assert [rank_label(r) for r in (first, second)] == ["=1", "=1"]
    assert second["rank_vs_above"]["test"] == PAIRED
    assert (second["rank_vs_above"]["lo"], second["rank_vs_above"]["hi"]) == (0.0, 0.0)
    assert first["rank_test"] == second["rank_test"] == PAIRED
    assert "paired bootstrap 95% CI of the difference [+0.0000, +0.0000]" in tie_note(second)
    assert tie_note(first) == f"rank shared with the row below ({PAIRED})"


def test_rows_without_records_use_ci_overlap() -> None:
    from calbench.report.ranking import CI_OVERLAP

    out = rank_rows(
        [
            _row("a", (0.10, 0.08, 0.12)),
            _row("b", (0.13, 0.11, 0.15)),
            _row("c", (0.30, 0.28, 0.32)),
        ]
    )
    assert [(rank_label(r), r["rank_test"]) for r in out] == [
        ("=1", CI_OVERLAP),
        ("=1", CI_OVERLAP),
        ("3", None),
    ]
    assert out[2]["rank_vs_above"] == {"test": CI_OVERLAP, "shared": False}


def test_published_rows_and_page_say_which_test(board) -> None:
    out, _, _ = board
    rows = json.loads((out / "leaderboard.json").read_text())
    ranked = [r for r in rows if r["rank"] is not None]
    assert all("rank_test" in r and "rank_vs_above" in r for r in rows)
    assert all(
        r["rank_vs_above"]["test"] == "paired bootstrap"
        for r in ranked
        if r["rank_vs_above"] is not None
    )
    assert "by a paired test" in (out / "index.html").read_text()


# ---------------------------------------------------------------------------- across seeds


def test_seeds_of_one_recipe_get_mean_and_sd_next_to_their_cis(tmp_path: Path) -> None:
    from statistics import fmean, stdev

    from calbench.report.seeds import recipe_and_seed

    res = tmp_path / "results"
    for seed, over in ((0, 0.05), (1, 0.15), (2, 0.25)):
        name = "m-rlcr" + (f"-seed{seed}" if seed else "")
        runs_make.make_run(res, model=name, overconfidence=over, seed=seed)
    runs_make.make_run(res, model="m-rlvr", seed=0)  # one seed only: no group
    runs_make.make_run(res, model="other-seedling", seed=0)  # not a seed suffix
    rows = build(res, tmp_path / "lb", diagrams=False)
    groups = json.loads((tmp_path / "lb" / "seeds.json").read_text())
    assert [(g["task"], g["recipe"]) for g in groups] == [("synthmath", "m-rlcr")]
    (g,) = groups
    assert [s["seed"] for s in g["seeds"]] == [0, 1, 2]
    by_model = {r["model"]: r for r in rows}
    for k in ("accuracy", "ece", "brier", "auroc"):
        vals = [by_model[s["model"]][k]["value"] for s in g["seeds"]]
        assert g["summary"][k]["mean"] == pytest.approx(fmean(vals))
        assert g["summary"][k]["sd"] == pytest.approx(stdev(vals))
        assert g["summary"][k]["n_seeds"] == 3
        assert all(s[k]["lo"] <= s[k]["value"] <= s[k]["hi"] for s in g["seeds"])
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    section = md.split("## Across seeds", 1)[1]
    acc = g["summary"]["accuracy"]
    assert f"**{acc['mean']:.3f} ± {acc['sd']:.3f}** (3 seeds)" in section
    assert "m-rlvr" not in section and "other-seedling" not in section
    page = (tmp_path / "lb" / "index.html").read_text()
    assert 'id="seeds"' in page and f"{acc['mean']:.3f} ± {acc['sd']:.3f} (3 seeds)" in page
    assert recipe_and_seed("a-seed12") == ("a", 12) and recipe_and_seed("seed3") == ("seed3", 0)
    # no recipe with two seeds: no section, an empty seeds.json
    build(res / "m-rlvr", tmp_path / "lb2", diagrams=False)
    assert "Across seeds" not in (tmp_path / "lb2" / "leaderboard.md").read_text()
    assert 'id="seeds"' not in (tmp_path / "lb2" / "index.html").read_text()
    assert json.loads((tmp_path / "lb2" / "seeds.json").read_text()) == []
