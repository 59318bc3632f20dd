"""The one record check (calbench.core.records.validate_record) and every reader that uses it:
``calbench score``, ``leaderboard`` and ``plot`` reject each bad record with exit 2, name the
file, line and field, and leave what was already written untouched."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from calbench.cli import main
from calbench.core.records import RecordError, read_samples, validate_record
from tests.fixtures import runs_make

GOOD = {"id": "t/1", "correct": True, "confidence": 0.8}

# (name, field, bad value, what the error says). The JSON text of each value is written
# literally, so "NaN" and "Infinity" reach the reader as Python's json module parses them.
BAD = [
    ("correct-string-false", "correct", '"false"', "'correct' must be true/false or 0/1"),
    ("correct-string-0", "correct", '"0"', "'correct' must be true/false or 0/1"),
    ("correct-yes", "correct", '"yes"', "'correct' must be true/false or 0/1"),
    ("correct-null", "correct", "null", "'correct' must be true/false or 0/1"),
    ("correct-half", "correct", "0.5", "'correct' must be true/false or 0/1"),
    ("confidence-bool", "confidence", "true", "'confidence' must be a number or null"),
    ("confidence-string", "confidence", '"0.9"', "'confidence' must be a number or null"),
    ("confidence-nan", "confidence", "NaN", "'confidence' is NaN"),
    ("confidence-above-1", "confidence", "1.5", r"'confidence' must lie in \[0, 1\]"),
    ("confidence-negative", "confidence", "-0.1", r"'confidence' must lie in \[0, 1\]"),
    ("confidence-inf", "confidence", "Infinity", r"'confidence' must lie in \[0, 1\]"),
    ("id-null", "id", "null", "'id' must be a non-empty string or an integer"),
    ("id-empty", "id", '""', "'id' must be a non-empty string or an integer"),
    ("id-list", "id", "[1]", "'id' must be a non-empty string or an integer"),
    ("id-duplicate", "id", "DUP", "'id' .* repeats the id at .*samples.jsonl:1"),
    ("confidence-missing", "confidence", "MISSING", "record lacks confidence"),
]
BAD_LINE = 3  # the record of the fixture file that is broken


# ---------------------------------------------------------------------------- the validator


@pytest.mark.parametrize(
    ("obj", "correct", "conf"),
    [
        ({"id": "a", "correct": True, "confidence": 0.8}, True, 0.8),
        ({"id": 7, "correct": 1, "confidence": 1}, True, 1.0),
        ({"id": "a", "correct": 0, "confidence": 0}, False, 0.0),
        ({"id": "a", "correct": 1.0, "confidence": None}, True, None),  # lm-eval logs floats
        ({"id": "a", "correct": False, "confidence": 0.0}, False, 0.0),
    ],
)
def test_valid_records_are_normalised(obj: dict, correct: bool, conf: float | None) -> None:
    rec = validate_record({**obj, "meta": {"k": 1}}, "f.jsonl:1")
    assert rec["correct"] is correct and rec["confidence"] == conf
    assert rec["meta"] == {"k": 1} and rec["id"] == obj["id"]
    assert type(rec["confidence"]) in (float, type(None))


@pytest.mark.parametrize(("name", "field", "raw", "message"), BAD, ids=[b[0] for b in BAD])
def test_validator_rejects(name: str, field: str, raw: str, message: str) -> None:
    seen: dict[str, str] = {}
    validate_record({"id": "t/0", "correct": True, "confidence": 0.5}, "s/samples.jsonl:1", seen)
    obj = dict(GOOD)
    if raw == "MISSING":
        del obj[field]
    elif raw == "DUP":
        obj["id"] = "t/0"
    else:
        obj[field] = json.loads(raw)
    with pytest.raises(RecordError, match=f"^s/samples.jsonl:2: {message}"):
        validate_record(obj, "s/samples.jsonl:2", seen)


def test_ids_compare_as_text_and_bools_are_not_ids() -> None:
    seen: dict[str, str] = {}
    validate_record({**GOOD, "id": 1}, "f:1", seen)
    with pytest.raises(RecordError, match="repeats"):
        validate_record({**GOOD, "id": "1"}, "f:2", seen)
    with pytest.raises(RecordError, match="'id' must be"):
        validate_record({**GOOD, "id": True}, "f:3")
    with pytest.raises(RecordError, match="expected a JSON object"):
        validate_record([1, 2], "f:4")


def test_read_samples_names_the_real_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "id": "t/2", "confidence": 2}) + "\n"
    )
    with pytest.raises(RecordError, match=r"samples\.jsonl:3: 'confidence' must lie"):
        read_samples(path)
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "correct": 0}) + "\n")
    with pytest.raises(
        RecordError,
        match=r"samples\.jsonl:2: 'id' 't/1' repeats the id at "
        r".*samples\.jsonl:1",
    ):
        read_samples(path)
    path.write_text(json.dumps({**GOOD, "confidence": None}) + "\n")
    [rec] = read_samples(path)
    assert rec["confidence"] is None and rec["correct"] is True


# ---------------------------------------------------------------------------- the CLI readers


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A results tree of two good runs (samples.jsonl + metrics.json + manifest.json), with a
    leaderboard and a plot already built from it."""
    root = tmp_path_factory.mktemp("records")
    res = root / "results"
    runs_make.make_run(res, model="org/a", n=30, seed=1)
    runs_make.make_run(res, model="org/b", n=30, seed=2)
    assert main(["leaderboard", str(res), "--out", str(root / "lb")]) == 0
    assert main(["plot", str(res), "--out", str(root / "plot.png")]) == 0
    return root


def _corrupt(samples: Path, raw: str, field: str) -> None:
    """Replace line BAD_LINE's ``field`` by the JSON text ``raw`` (MISSING: delete it; DUP: the
    first record's id)."""
    lines = samples.read_text().splitlines()
    first = json.loads(lines[0])
    obj = json.loads(lines[BAD_LINE - 1])
    if raw == "MISSING":
        del obj[field]
        text = json.dumps(obj)
    elif raw == "DUP":
        obj["id"] = first["id"]
        text = json.dumps(obj)
    else:
        obj[field] = "@@RAW@@"
        text = json.dumps(obj).replace('"@@RAW@@"', raw)
    lines[BAD_LINE - 1] = text
    samples.write_text("\n".join(lines) + "\n")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", ["score", "leaderboard", "plot", "plot-risk-coverage"])
@pytest.mark.parametrize(("name", "field", "raw", "message"), BAD, ids=[b[0] for b in BAD])
def test_cli_rejects_bad_record(
    template: Path,
    tmp_path: Path,
    capsys,
    command: str,
    name: str,
    field: str,
    raw: str,
    message: str,
) -> None:
    root = tmp_path / "w"
    shutil.copytree(template, root)
    res = root / "results"
    samples = sorted(res.rglob("samples.jsonl"))[-1]
    _corrupt(samples, raw, field)
    before = _snapshot(root / "lb") | {"plot.png": (root / "plot.png").read_bytes()}
    capsys.readouterr()
    argv = {
        "score": [
            "score",
            str(samples.parent),
            "--output",
            str(root / "scores"),
            "--n-bootstrap",
            "10",
        ],
        "leaderboard": ["leaderboard", str(res), "--out", str(root / "lb")],
        "plot": ["plot", str(res), "--out", str(root / "plot.png")],
        # Drawn from metrics.json alone: the records are still checked.
        "plot-risk-coverage": [
            "plot",
            str(res),
            "--kind",
            "risk-coverage",
            "--out",
            str(root / "plot.png"),
        ],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"samples.jsonl:{BAD_LINE}: " in err, err
    assert re.search(message, err), err
    # Nothing already written changed, and nothing new was written.
    assert _snapshot(root / "lb") | {"plot.png": (root / "plot.png").read_bytes()} == before
    assert not (root / "scores").exists()


LMEVAL = (
    Path(__file__).parent
    / "fixtures"
    / "lmeval_output"
    / "synth-org__Synth-1B-Instruct"
    / "samples_calbench_synth_2025-01-01T00-00-00.000000.jsonl"
)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(correct="1"), "'correct' must be true/false or 0/1, got '1'"),
        (lambda s: s.update(confidence=1.5), r"'confidence' must lie in \[0, 1\]"),
        (lambda s: s.update(confidence=True), "'confidence' must be a number or null"),
        (lambda s: s["doc"].update(id="synth/test/0"), "'id' 'synth/test/0' repeats the id"),
    ],
    ids=["correct-string", "confidence-above-1", "confidence-bool", "id-duplicate"],
)
def test_lmeval_import_uses_the_same_check(tmp_path: Path, capsys, edit, message: str) -> None:
    lines = [json.loads(line) for line in LMEVAL.read_text().splitlines()]
    edit(lines[BAD_LINE - 1])
    # Python's json writes the fixture's NaN confidences back as NaN: lm-eval's "unparsed".
    path = tmp_path / LMEVAL.name
    path.write_text("".join(json.dumps(s) + "\n" for s in lines))
    assert main(["score", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(f"{re.escape(path.name)}:{BAD_LINE}: {message}", err), err
    assert not (tmp_path / "out").exists()
    # The file as shipped reads, its NaN confidences as unparsed (None).
    assert (
        main(["score", str(LMEVAL), "--output", str(tmp_path / "ok"), "--n-bootstrap", "10"]) == 0
    )
