"""``calbench leaderboard``: ranking rule, the four output formats, escaping."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from calbench.cli import main
from calbench.leaderboard import (
    COLUMNS,
    build,
    csv_safe,
    md_escape,
    rank_label,
    rank_rows,
)
from tests.fixtures import runs_make

EVIL = '<img src=x onerror="alert(1)"> $x$ | evil'


def _row(model: str, brier: tuple | None, task: str = "t", auroc: tuple | None = None) -> dict:
    def m(t):
        return {"value": None, "lo": None, "hi": None} if t is None else dict(
            zip(("value", "lo", "hi"), t, strict=True))

    row = {"task": task, "model": model, "elicitation": "tags", "n": 100, "run": model,
           "rank": None, "rank_shared": False}
    for k, _, _ in COLUMNS:
        row[k] = m(None)
    row["brier"] = m(brier)
    row["auroc"] = m(auroc)
    return row


# ---------------------------------------------------------------------------- ranking rule


def test_rank_shares_only_with_overlapping_row_above() -> None:
    rows = [
        _row("c", (0.20, 0.17, 0.23)),
        _row("a", (0.10, 0.08, 0.12)),
        _row("b", (0.13, 0.11, 0.15)),  # overlaps a
        _row("d", (0.30, 0.28, 0.32)),  # overlaps nothing
        _row("e", None),                # undefined: unranked, last
    ]
    out = rank_rows(rows)
    assert [r["model"] for r in out] == ["a", "b", "c", "d", "e"]
    assert [rank_label(r) for r in out] == ["=1", "=1", "3", "4", "—"]


def test_rank_sharing_chains_down_the_table() -> None:
    # b overlaps a, c overlaps b but not a: the rule compares with the row above, so all share.
    rows = [_row("a", (0.10, 0.08, 0.12)), _row("b", (0.12, 0.11, 0.14)),
            _row("c", (0.15, 0.135, 0.17)), _row("d", (0.5, 0.45, 0.55))]
    assert [rank_label(r) for r in rank_rows(rows)] == ["=1", "=1", "=1", "4"]


def test_rank_higher_is_better_and_per_task() -> None:
    rows = [_row("a", None, auroc=(0.6, 0.55, 0.65)), _row("b", None, auroc=(0.8, 0.75, 0.85)),
            _row("c", None, task="u", auroc=(0.7, 0.6, 0.8))]
    out = rank_rows(rows, "auroc")
    assert [(r["task"], r["model"], r["rank"]) for r in out] == [("t", "b", 1), ("t", "a", 2),
                                                                 ("u", "c", 1)]


def test_row_without_ci_cannot_be_separated() -> None:
    rows = [_row("a", (0.1, None, None)), _row("b", (0.4, 0.38, 0.42))]
    assert [rank_label(r) for r in rank_rows(rows)] == ["=1", "=1"]


def test_unknown_rank_metric_is_usage_error() -> None:
    from calbench.errors import UsageError

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
    for k in ("accuracy", "ece", "smooth_ece", "brier", "brier_rel", "brier_res", "auroc",
              "aurc"):
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
    assert len(re.findall(r"(?<!\\)\|", evil_line)) == 4 + len(COLUMNS) + 1
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
    assert main(["leaderboard", str(results), "--out", str(out), "--rank-by", "auroc",
                 "--no-diagrams"]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert not (out / "diagrams").exists()
    assert all(r["diagram"] is None for r in rows)
    synthmath = [r["auroc"]["value"] for r in rows if r["task"] == "synthmath"]
    assert synthmath == sorted(synthmath, reverse=True)
    assert "Ranked within each task by AUROC (higher is better)" in (out / "index.html").read_text()
