"""Question sources for calbench's tasks.

Every loader returns items ``{"id", "question", "gold", "meta"}``: ``question`` is the full text
shown to the model (options included for multiple choice), ``gold`` what the task's grader
compares against (a number, a letter, ``|``-joined aliases, or JSON for the reference-based
graders). Hub loaders are the real ones (``datasets.load_dataset``); each can also read local
files in the dataset's own schema (``--data-dir`` / ``$CALBENCH_DATA_DIR``), because the hub is
not always reachable. :data:`LOADERS` maps the ``loader`` named in a task YAML to its function.
"""

from __future__ import annotations

import csv
import json
import os
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calbench.core.chain_sum import chain_sum_items, load_chain_sum_shift
from calbench.core.errors import UsageError
from calbench.core.grade import gsm8k_gold

LETTERS = string.ascii_uppercase


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    d = explicit or os.environ.get("CALBENCH_DATA_DIR")
    return Path(d).expanduser() if d else None


def read_rows(path: Path) -> list[dict]:
    """Rows of a local data file: ``.jsonl``, ``.json`` (a list, or ``{"data": [...]}``),
    ``.csv`` or ``.parquet``. Errors name the file and line."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UsageError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        return rows
    if suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        rows = obj.get("data", obj.get("rows")) if isinstance(obj, dict) else obj
        if not isinstance(rows, list):
            raise UsageError(f"{path}: expected a JSON list of rows")
        return rows
    if suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is not a name
            return list(csv.DictReader(f))
    if suffix == ".parquet":
        import datasets  # lazy: as in _rows

        return list(datasets.Dataset.from_parquet(str(path)))
    raise UsageError(f"{path}: unsupported data file type {suffix!r} (jsonl, json, csv, parquet)")


def _rows(
    task: str, data_dir_: str | None, local: list[str], hub: tuple, split: str
) -> tuple[list[dict], str]:
    """Rows from the first existing local candidate under the data dir, else from the hub.

    ``hub`` is ``(path, config_name_or_None)``; ``local`` lists paths relative to the data dir,
    with ``{split}`` filled in.
    """
    root = resolve_data_dir(data_dir_)
    if root is not None:
        tried = [c.format(split=split) for c in local]
        for rel in tried:
            if (root / rel).is_file():
                return read_rows(root / rel), f"local:{root / rel}"
        raise UsageError(f"{task}: no data file under {root} (looked for {', '.join(tried)})")
    path, name = hub
    try:
        # lazy: datasets +0.6-1.8 s at import (python -X importtime); local data and the
        # generated tasks do without it
        import datasets

        rows = list(datasets.load_dataset(path, name, split=split))
    except Exception as e:
        raise UsageError(
            f"{task}: could not load {path} from the Hugging Face hub ({type(e).__name__}). "
            f"Offline? Pass --data-dir DIR (or set CALBENCH_DATA_DIR) with "
            f"{' or '.join(c.format(split=split) for c in local)}"
            + (", or use the offline task gsm_symbolic." if task == "gsm8k" else ".")
        ) from None
    return rows, f"hub:{path}" + (f"/{name}" if name else "") + f"/{split}"


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise UsageError(f"{where}: row lacks {', '.join(missing)} (got {sorted(row)[:8]})")


def _split_list(v: Any) -> list[str]:
    """A list field that the original CSVs store as '; '-separated text."""
    if isinstance(v, list):
        return [str(x).strip() for x in v if str(x).strip()]
    return [x.strip() for x in str(v or "").split(";") if x.strip()]


def multiple_choice(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}) {o}" for i, o in enumerate(options)]
    lines += ["", "Answer with the letter of the correct option."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- math


def load_gsm8k(data_dir: str | None = None, split: str = "test", **_: object) -> list[dict]:
    """GSM8K (``openai/gsm8k``, config ``main``) or local ``gsm8k/{split}.jsonl``."""
    rows, source = _rows(
        "gsm8k", data_dir, ["gsm8k/{split}.jsonl", "{split}.jsonl"], ("openai/gsm8k", "main"), split
    )
    items = []
    for i, r in enumerate(rows):
        _need(r, ("question", "answer"), f"gsm8k row {i} ({source})")
        items.append(
            {
                "id": f"gsm8k/{split}/{i}",
                "question": r["question"],
                "gold": gsm8k_gold(r["answer"]),
                "meta": {"source": source},
            }
        )
    return items


def load_gsm_symbolic(size: int = 500, seed: int = 0, **_: object) -> list[dict]:
    """GSM-Symbolic problems generated offline by reasoning-gym (GSM8K templates with new
    numbers), seeded so a run is reproducible."""
    import reasoning_gym  # lazy: +0.8-3 s at import (python -X importtime); only this task

    ds = reasoning_gym.create_dataset("gsm_symbolic", seed=int(seed), size=int(size))
    items = []
    for i, x in enumerate(ds):
        # reasoning-gym appends "Give the result as your final answer. Do not include units.";
        # kept: it is part of the generated problem.
        items.append(
            {
                "id": f"gsm_symbolic/s{seed}/{i}",
                "question": x["question"],
                "gold": str(x["answer"]).strip(),
                "meta": {
                    "difficulty": x["metadata"].get("difficulty"),
                    "source_index": x["metadata"].get("source_index"),
                },
            }
        )
    return items


def load_math500(data_dir: str | None = None, split: str = "test", **_: object) -> list[dict]:
    """MATH-500 (``HuggingFaceH4/MATH-500``) or local ``math500/test.jsonl``
    (fields ``problem, answer, subject, level, unique_id``)."""
    rows, source = _rows(
        "math500",
        data_dir,
        ["math500/{split}.jsonl", "math500/{split}.json"],
        ("HuggingFaceH4/MATH-500", None),
        split,
    )
    items = []
    for i, r in enumerate(rows):
        _need(r, ("problem", "answer"), f"math500 row {i} ({source})")
        items.append(
            {
                "id": f"math500/{r.get('unique_id', i)}",
                "question": r["problem"],
                "gold": str(r["answer"]),
                "meta": {"subject": r.get("subject"), "level": r.get("level")},
            }
        )
    return items


# --------------------------------------------------------------------------- multiple choice


def load_commonsenseqa(
    data_dir: str | None = None, split: str = "validation", **_: object
) -> list[dict]:
    """CommonsenseQA (``tau/commonsense_qa``; validation, as the RLCR paper: its test split has
    no labels) or local ``commonsenseqa/validation.jsonl`` in the hub schema
    (``id, question, choices: {label, text}, answerKey``)."""
    rows, source = _rows(
        "commonsenseqa",
        data_dir,
        ["commonsenseqa/{split}.jsonl", "commonsenseqa/{split}.json"],
        ("tau/commonsense_qa", None),
        split,
    )
    items = []
    for i, r in enumerate(rows):
        _need(r, ("question", "choices", "answerKey"), f"commonsenseqa row {i} ({source})")
        labels, texts = r["choices"]["label"], r["choices"]["text"]
        if r["answerKey"] not in labels:
            raise UsageError(
                f"commonsenseqa row {i}: answerKey {r['answerKey']!r} not in {labels} ({source})"
            )
        # Options are shown as A..E in the dataset's own order; the gold is its own label.
        items.append(
            {
                "id": f"commonsenseqa/{r.get('id', i)}",
                "question": multiple_choice(r["question"], list(texts)),
                "gold": LETTERS[labels.index(r["answerKey"])],
                "meta": {"n_options": len(labels)},
            }
        )
    return items


# The columns of the original TruthfulQA.csv that the loaders read.
TRUTHFULQA_COLUMNS = ("Question", "Best Answer", "Incorrect Answers")


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f), [])


def _csv_row_line(path: Path, index: int) -> int:
    """The line on which data row ``index`` (0-based) of a CSV ends (fields may span lines)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        for k, _ in enumerate(reader):
            if k == index:
                return reader.line_num
    return 0


def _truthfulqa_rows(data_dir: str | None) -> tuple[list[dict], str]:
    """TruthfulQA rows normalised to the CSV's field names (Question, Best Answer, Correct
    Answers, Incorrect Answers, Category), from the hub (``truthfulqa/truthful_qa``,
    ``generation``) or the original ``TruthfulQA.csv``. A local CSV must have the
    :data:`TRUTHFULQA_COLUMNS` in its header, at least one row, and in every row a question,
    a best answer and at least one incorrect answer; errors name the file (and line)."""
    rows, source = _rows(
        "truthfulqa",
        data_dir,
        ["truthfulqa/TruthfulQA.csv", "TruthfulQA.csv"],
        ("truthfulqa/truthful_qa", "generation"),
        "validation",
    )
    local = Path(source.removeprefix("local:")) if source.startswith("local:") else None
    if local is not None:
        header = _csv_header(local)
        missing = [c for c in TRUTHFULQA_COLUMNS if c not in header]
        if missing:
            raise UsageError(
                f"{local}: the header lacks the TruthfulQA column(s) {', '.join(missing)} "
                f"(found {', '.join(header) or 'no header'}); expected the original "
                f"TruthfulQA.csv: comma-separated, with columns Type, Category, Question, "
                f"Best Answer, Correct Answers, Incorrect Answers, Source"
            )
    if not rows:
        raise UsageError(f"{local or source}: no TruthfulQA questions (the original has 817)")
    out = []
    for i, r in enumerate(rows):
        if local is None:  # hub schema -> CSV names
            _need(r, ("question", "best_answer", "incorrect_answers"), f"{source} row {i}")
            r = {
                "Question": r["question"],
                "Best Answer": r["best_answer"],
                "Correct Answers": r.get("correct_answers", []),
                "Incorrect Answers": r["incorrect_answers"],
                "Category": r.get("category"),
                "Type": r.get("type"),
            }
        # a short CSV row leaves its last fields None; an empty one would show "None" or no
        # wrong option
        empty = [c for c in ("Question", "Best Answer") if not str(r.get(c) or "").strip()]
        if not _split_list(r.get("Incorrect Answers")):
            empty.append("Incorrect Answers")
        if empty:
            where = f"{local}:{_csv_row_line(local, i)}" if local else f"{source} row {i}"
            raise UsageError(f"{where}: TruthfulQA row {i} has no {', '.join(empty)}")
        out.append(r)
    return out, source


def load_truthfulqa_mc(data_dir: str | None = None, seed: int = 0, **_: object) -> list[dict]:
    """TruthfulQA as lettered multiple choice: the Best Answer and all Incorrect Answers,
    shuffled per question with ``Random(seed * 100003 + row)``; the permutation is recorded in
    ``meta.order`` (``order[k]`` = original index of option k; index 0 is the Best Answer)."""
    rows, source = _truthfulqa_rows(data_dir)
    items = []
    for i, r in enumerate(rows):
        options = [str(r["Best Answer"]).strip()] + _split_list(r["Incorrect Answers"])
        order = list(range(len(options)))
        random.Random(int(seed) * 100003 + i).shuffle(order)
        shown = [options[k] for k in order]
        items.append(
            {
                "id": f"truthfulqa/{i}",
                "question": multiple_choice(str(r["Question"]), shown),
                "gold": LETTERS[order.index(0)],
                "meta": {
                    "order": order,
                    "n_options": len(options),
                    "seed": int(seed),
                    "category": r.get("Category"),
                    "source": source,
                },
            }
        )
    return items


def load_truthfulqa_gen(data_dir: str | None = None, **_: object) -> list[dict]:
    """TruthfulQA free-form: ``gold`` is JSON ``{"correct": [...], "incorrect": [...]}`` (the
    Best Answer first among the correct ones), for the judge and similarity graders."""
    rows, source = _truthfulqa_rows(data_dir)
    items = []
    for i, r in enumerate(rows):
        correct = [str(r["Best Answer"]).strip()] + [
            a for a in _split_list(r.get("Correct Answers", [])) if a != r["Best Answer"]
        ]
        items.append(
            {
                "id": f"truthfulqa/{i}",
                "question": str(r["Question"]).strip(),
                "gold": json.dumps(
                    {"correct": correct, "incorrect": _split_list(r["Incorrect Answers"])}
                ),
                "meta": {"category": r.get("Category"), "source": source},
            }
        )
    return items


# --------------------------------------------------------------------------- short answer


def load_triviaqa(
    data_dir: str | None = None, split: str = "validation", **_: object
) -> list[dict]:
    """TriviaQA closed-book (``mandarjoshi/trivia_qa``, ``rc.nocontext``) or local
    ``triviaqa/validation.jsonl`` (``question, question_id, answer: {value, aliases}``).
    Gold = ``|``-joined value and aliases."""
    rows, source = _rows(
        "triviaqa",
        data_dir,
        ["triviaqa/{split}.jsonl", "triviaqa/{split}.json"],
        ("mandarjoshi/trivia_qa", "rc.nocontext"),
        split,
    )
    items = []
    for i, r in enumerate(rows):
        _need(r, ("question", "answer"), f"triviaqa row {i} ({source})")
        ans = r["answer"]
        aliases = [ans["value"], *ans.get("aliases", [])]
        seen: dict[str, None] = dict.fromkeys(a.replace("|", " ") for a in aliases if a)
        items.append(
            {
                "id": f"triviaqa/{r.get('question_id', i)}",
                "question": r["question"],
                "gold": "|".join(seen),
                "meta": {},
            }
        )
    return items


def load_hotpotqa(
    data_dir: str | None = None, split: str = "validation", **_: object
) -> list[dict]:
    """HotpotQA closed-book (``hotpotqa/hotpot_qa``, ``distractor``; the question only, no
    paragraphs) or local ``hotpotqa/validation.jsonl`` or the original
    ``hotpot_dev_distractor_v1.json`` (``_id``/``id, question, answer, type, level``)."""
    rows, source = _rows(
        "hotpotqa",
        data_dir,
        ["hotpotqa/{split}.jsonl", "hotpotqa/hotpot_dev_distractor_v1.json"],
        ("hotpotqa/hotpot_qa", "distractor"),
        split,
    )
    items = []
    for i, r in enumerate(rows):
        _need(r, ("question", "answer"), f"hotpotqa row {i} ({source})")
        items.append(
            {
                "id": f"hotpotqa/{r.get('id', r.get('_id', i))}",
                "question": r["question"],
                "gold": str(r["answer"]).replace("|", " "),
                "meta": {"type": r.get("type"), "level": r.get("level")},
            }
        )
    return items


def load_simpleqa(data_dir: str | None = None, split: str = "test", **_: object) -> list[dict]:
    """SimpleQA (``basicv8vc/SimpleQA``) or the original ``simple_qa_test_set.csv``
    (``metadata, problem, answer``)."""
    rows, source = _rows(
        "simpleqa",
        data_dir,
        ["simpleqa/simple_qa_test_set.csv", "simpleqa/{split}.jsonl"],
        ("basicv8vc/SimpleQA", None),
        split,
    )
    items = []
    for i, r in enumerate(rows):
        _need(r, ("problem", "answer"), f"simpleqa row {i} ({source})")
        items.append(
            {
                "id": f"simpleqa/{i}",
                "question": r["problem"],
                "gold": str(r["answer"]).replace("|", " "),
                "meta": {},
            }
        )
    return items


# --------------------------------------------------------------------------- generic


def load_file(
    data_dir: str | None = None,
    file: str | None = None,
    hub: str | None = None,
    hub_name: str | None = None,
    split: str = "test",
    fields: dict[str, str] | None = None,
    task: str = "task",
    **_: object,
) -> list[dict]:
    """The loader for one-YAML tasks: rows from ``file`` (relative to the data dir, or
    absolute) or the hub dataset ``hub``/``hub_name``/``split``, with ``fields`` naming the
    question, gold and (optional) id columns: ``{"question": "q", "gold": "a", "id": "qid"}``.
    """
    fields = {"question": "question", "gold": "answer", **(fields or {})}
    if file and Path(file).is_absolute():
        rows, source = read_rows(Path(file)), f"local:{file}"
    elif file and resolve_data_dir(data_dir) is not None:
        rows, source = _rows(task, data_dir, [file], (hub, hub_name), split)
    elif hub:
        rows, source = _rows(task, None, [file or f"{task}/{split}.jsonl"], (hub, hub_name), split)
    else:
        raise UsageError(
            f"{task}: no data: the task names no hub dataset and no --data-dir "
            f"was given for its file {file!r}"
        )
    items = []
    for i, r in enumerate(rows):
        _need(r, (fields["question"], fields["gold"]), f"{task} row {i} ({source})")
        gold = r[fields["gold"]]
        gold = "|".join(map(str, gold)) if isinstance(gold, list) else str(gold)
        rid = r.get(fields.get("id", "id"), i)
        items.append(
            {
                "id": f"{task}/{rid}",
                "question": str(r[fields["question"]]),
                "gold": gold,
                "meta": {},
            }
        )
    return items


def load_chain_sum(split: str = "test", size: int = 500, seed: int = 0, **_: object) -> list[dict]:
    """The trainer's in-domain task: reasoning-gym ``chain_sum`` sums (see
    :mod:`calbench.core.chain_sum`), held-out ``test`` split by default."""
    return chain_sum_items(split, int(size), seed=int(seed))


LOADERS: dict[str, Callable[..., list[dict]]] = {
    "chain_sum": load_chain_sum,
    "chain_sum_shift": load_chain_sum_shift,  # the shifted chain_sum_* tasks
    "gsm8k": load_gsm8k,
    "gsm_symbolic": load_gsm_symbolic,
    "math500": load_math500,
    "commonsenseqa": load_commonsenseqa,
    "truthfulqa_mc": load_truthfulqa_mc,
    "truthfulqa_gen": load_truthfulqa_gen,
    "triviaqa": load_triviaqa,
    "hotpotqa": load_hotpotqa,
    "simpleqa": load_simpleqa,
    "file": load_file,
}
