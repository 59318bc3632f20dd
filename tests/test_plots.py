"""``calbench plot`` and the run loader it shares with the leaderboard (calbench/runs.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calbench.cli import main
from calbench.core.runs import find_run_dirs, load_run, load_runs, parse_rate, wilson_interval
from calbench.report.plot_reliability import reliability_figure
from calbench.report.plot_risk_coverage import risk_coverage_figure
from calbench.report.plot_style import fmt_ci, save_figure
from tests.fixtures import runs_make


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    return runs_make.make_results(tmp_path_factory.mktemp("plots") / "results")


def _texts(fig) -> list[str]:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(loc="left")] + [t.get_text() for t in ax.texts]
        leg = ax.get_legend()
        if leg:
            out += [t.get_text() for t in leg.get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return out


def test_find_and_load_runs(results: dict[str, Path]) -> None:
    root = results["good"].parent.parent
    dirs = find_run_dirs([root])
    assert sorted(map(Path.resolve, dirs)) == sorted(p.resolve() for p in results.values())
    run = load_run(results["good"])
    assert (run.model, run.task, run.elicitation, run.n) == (
        "org/good-model",
        "synthmath",
        "tags",
        200,
    )
    saved = json.loads((results["good"] / "metrics.json").read_text())
    assert run.metric("ece") == saved["metrics"]["ece"]
    assert not run.recomputed


def test_parse_rate_counts_records_with_a_confidence(results: dict[str, Path]) -> None:
    run = load_run(results["bad"])
    k = sum(r["confidence"] is not None for r in run.records)
    pr = parse_rate(run)
    assert pr["value"] == pytest.approx(k / 200)
    assert pr["lo"] < pr["value"] < pr["hi"]
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_reliability_diagram_content(results: dict[str, Path]) -> None:
    run = load_run(results["bad"])
    fig = reliability_figure([run])
    main_ax, hist_ax = fig.axes
    title = main_ax.get_title(loc="left")
    assert "org/bad-model" in title and "synthmath · tags · n=200" in title
    texts = _texts(fig)
    assert any(f"ECE {fmt_ci(run.metric('ece'))}" in t for t in texts)
    assert any("smooth ECE" in t for t in texts)
    # Three bar layers per non-empty bin: solid part, shaded gap, accuracy outline.
    bins = [b for b in run.summary["reliability"]["bins"] if b["n"]]
    assert len(main_ax.patches) == 3 * len(bins)
    outlines = [p for p in main_ax.patches if not p.get_fill()]
    assert sorted(round(p.get_height(), 9) for p in outlines) == sorted(
        round(b["accuracy"], 9) for b in bins
    )
    # Each gap spans accuracy..mean confidence of its bin.
    gaps = main_ax.patches[1::3]
    for g, b in zip(gaps, bins, strict=True):
        assert g.get_y() == pytest.approx(min(b["accuracy"], b["mean_conf"]))
        assert g.get_height() == pytest.approx(abs(b["accuracy"] - b["mean_conf"]))
    # The smooth curve is drawn only over the confidences the run used.
    curve = max(main_ax.lines, key=lambda ln: len(ln.get_xdata()))
    xs = curve.get_xdata()
    confs = run.confidences()
    assert min(xs) >= min(confs) - 1e-9 and max(xs) <= max(confs) + 1e-9
    # The histogram shows the piles: one bar per distinct stated value.
    assert len(hist_ax.patches) == len({round(c, 2) for c in confs})
    assert any("most stated: 0.9" in t for t in texts)


def test_plot_cli_png_and_svg(results: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "one.png"
    assert main(["plot", str(results["good"]), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "all.svg"
    root = results["good"].parent.parent
    assert main(["plot", str(root), "--out", str(svg)]) == 0
    text = svg.read_text()
    # The hostile name is SVG text, escaped, and "$x$" stays literal (no mathtext).
    assert "<img src" not in text
    assert "&lt;img src=x onerror=" in text
    assert "$x$" in text
    # Saving is reproducible: no timestamp in the file.
    again = tmp_path / "again.svg"
    assert main(["plot", str(root), "--out", str(again)]) == 0
    assert again.read_bytes() == svg.read_bytes()


def test_small_multiples_and_overlay(results: dict[str, Path]) -> None:
    runs = load_runs([results["good"], results["bad"], results["evil"]])
    grid = reliability_figure(runs, layout="grid")
    assert len(grid.axes) == 6
    overlay = reliability_figure(runs, layout="overlay")
    assert len(overlay.axes) == 2
    labels = [t.get_text() for t in overlay.axes[0].get_legend().get_texts()]
    assert sum("ECE" in lab for lab in labels) == 3


def test_risk_coverage(results: dict[str, Path], tmp_path: Path) -> None:
    runs = load_runs([results["good"], results["bad"]])
    fig = risk_coverage_figure(runs)
    texts = _texts(fig)
    for run in runs:
        assert any(f"AURC {fmt_ci(run.metric('aurc'))}" in t for t in texts)
    ax = fig.axes[0]
    drawn = [ln for ln in ax.lines if len(ln.get_xdata()) > 2]
    rc = runs[0].summary["risk_coverage"]
    assert list(drawn[0].get_ydata()) == pytest.approx(
        [r for _, r in sorted(zip(rc["coverage"], rc["risk"], strict=True))]
    )
    out = tmp_path / "rc.png"
    assert (
        main(
            [
                "plot",
                "--kind",
                "risk-coverage",
                str(results["good"]),
                str(results["bad"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 10_000


def test_metrics_recomputed_when_missing_or_incomplete(tmp_path: Path, capsys) -> None:
    d = runs_make.make_run(tmp_path, model="m", metrics=False, n=80, seed=7)
    run = load_run(d)
    assert run.recomputed and run.metric("brier")["value"] is not None
    # A metrics.json from an older calbench without the curves is completed from samples.
    d2 = runs_make.make_run(tmp_path, model="m2", n=80, seed=8, n_bootstrap=10)
    saved = json.loads((d2 / "metrics.json").read_text())
    del saved["smooth_curve"]
    (d2 / "metrics.json").write_text(json.dumps(saved))
    run2 = load_run(d2)
    assert run2.recomputed and "smooth_curve" in run2.summary
    assert "lacks smooth_curve" in capsys.readouterr().err


def test_histogram_without_samples_uses_bins(results: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(results["good"], d)
    (d / "samples.jsonl").unlink()
    run = load_run(d)
    fig = reliability_figure([run])
    nonempty = [b for b in run.summary["reliability"]["bins"] if b["n"]]
    assert len(fig.axes[1].patches) == len(nonempty)
    save_figure(fig, tmp_path / "x.png")


@pytest.mark.parametrize(
    "argv",
    [
        ["plot", "RUN", "--out", "x.pdf"],
        ["plot", "does/not/exist"],
        ["plot", "EMPTY"],
        ["plot", "RUN", "--task", "no-such-task", "--out", "x.png"],
    ],
)
def test_plot_usage_errors(argv: list[str], results: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    argv = [
        a.replace("RUN", str(results["good"])).replace("EMPTY", str(tmp_path / "empty"))
        for a in argv
    ]
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    assert main(argv) == 2


def test_broken_metrics_json_is_a_usage_error(results: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(results["good"], d)
    (d / "metrics.json").write_text("{not json")
    assert main(["plot", str(d), "--out", str(tmp_path / "x.png")]) == 2


def test_hostile_names_plot_writes_only_out(tmp_path: Path) -> None:
    res = tmp_path / "results"
    names = ["../../x", "<script>alert(1)</script>", str(tmp_path / "abs" / "evil")]
    for i, name in enumerate(names):
        d = runs_make.make_run(res, model=f"m{i}", seed=30 + i)
        (d / "manifest.json").write_text(
            json.dumps({"model": name, "task": name, "elicitation": name, "n": 200})
        )
    before = set(tmp_path.rglob("*"))
    for kind, name in (("reliability", "r.svg"), ("risk-coverage", "rc.png")):
        out = tmp_path / "plots" / name
        assert main(["plot", str(res), "--kind", kind, "--out", str(out)]) == 0
    assert set(tmp_path.rglob("*")) - before == {
        tmp_path / "plots",
        tmp_path / "plots" / "r.svg",
        tmp_path / "plots" / "rc.png",
    }
    svg = (tmp_path / "plots" / "r.svg").read_text()
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def _grouped_run(root: Path, sizes: dict[int, int]) -> Path:
    """A run whose records carry meta.num_terms; ``sizes``: num_terms -> how many records."""
    recs = runs_make.synthetic_records(
        sum(sizes.values()), task="chain_sum", elicitation="tags", overconfidence=0.1, seed=21
    )
    terms = [t for t, k in sizes.items() for _ in range(k)]
    for r, t in zip(recs, terms, strict=True):
        r["meta"] = {"num_terms": t, "num_digits": 1}
    return runs_make.write_run(root, recs, model="org/m", task="chain_sum", seed=21)


def test_by_draws_one_reliability_panel_per_group(tmp_path: Path) -> None:
    from calbench import metrics as M
    from calbench.report.plot_groups import group_runs

    d = _grouped_run(tmp_path / "res", {2: 60, 3: 50, 10: 40})
    run = load_run(d)
    panels, labels = group_runs([run], ["num_terms"])
    assert labels == ["num_terms=2", "num_terms=3", "num_terms=10"]
    fig = reliability_figure(panels, groups=labels)
    assert len(fig.axes) == 2 * 3  # a diagram and its histogram per group
    titles = [ax.get_title(loc="left") for ax in fig.axes[::2]]
    for title, label, panel, k in zip(titles, labels, panels, (60, 50, 40), strict=True):
        assert f"{label} · n={k}" in title and "org/m" in title
        recs = [r for r in run.records if f"num_terms={r['meta']['num_terms']}" == label]
        parsed = [r for r in recs if r["confidence"] is not None]  # the run's policy: drop
        ece = M.ece([r["correct"] for r in parsed], [r["confidence"] for r in parsed])
        assert panel.metric("ece")["value"] == pytest.approx(ece, abs=1e-12)
        assert f"ECE {fmt_ci(panel.metric('ece'))}" in title
        assert panel.records == recs
    out = tmp_path / "by.png"
    assert main(["plot", str(d), "--by", "num_terms", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_by_more_than_max_panels_is_a_clear_usage_error(tmp_path: Path, capsys) -> None:
    from calbench.report.plot_groups import MAX_PANELS

    d = _grouped_run(tmp_path / "res", {t: 10 for t in range(MAX_PANELS + 1)})
    out = tmp_path / "by.png"
    assert main(["plot", str(d), "--by", "num_terms", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"gives {MAX_PANELS + 1} panels" in err and f"more than {MAX_PANELS}" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra", [["--layout", "overlay"], ["--kind", "risk-coverage"], ["--by", ","]]
)
def test_by_usage_errors(tmp_path: Path, extra: list[str]) -> None:
    d = _grouped_run(tmp_path / "res", {2: 20, 3: 20})
    by = [] if "--by" in extra else ["--by", "num_terms"]
    assert main(["plot", str(d), *by, *extra, "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_by_needs_the_records(tmp_path: Path, capsys) -> None:
    d = _grouped_run(tmp_path / "res", {2: 20, 3: 20})
    (d / "samples.jsonl").unlink()
    assert main(["plot", str(d), "--by", "num_terms", "--out", str(tmp_path / "x.png")]) == 2
    assert "--by needs the run's records" in capsys.readouterr().err
