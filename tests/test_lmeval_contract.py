"""What calbench relies on in lm-evaluation-harness, checked on the installed release without
loading a model: the declared version range, the internals calbench calls (``CachingLM`` and
its "Cached requests:" log line, ``HFLM``'s interface, the API model classes and helpers), and
that lm-eval runs the shipped task plugins from ``calbench tasks --path`` on an in-process LM."""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from packaging.requirements import Requirement
from packaging.version import Version

from calbench.eval.harness import lmeval_samples_to_records
from calbench.eval.registry import available_tasks
from tests.conftest import REPO

CLI = [sys.executable, "-m", "calbench.cli"]


def _declared_lmeval() -> Requirement:
    reqs = [Requirement(r) for r in importlib.metadata.requires("calbench") or []]
    (req,) = [r for r in reqs if r.name == "lm-eval" and r.marker is None]
    return req


def test_installed_lm_eval_lies_in_the_declared_range():
    req = _declared_lmeval()
    installed = Version(importlib.metadata.version("lm_eval"))
    assert req.specifier, "lm-eval must be pinned to a range: calbench uses its internals"
    assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), (
        f"lm-eval has no upper bound: {req}"
    )
    assert installed in req.specifier, f"lm-eval {installed} is outside calbench's {req}"
    assert "api" in req.extras  # the OpenAI-compatible backends need lm-eval's API client


def test_installed_metadata_matches_pyproject():
    """An editable install keeps the metadata of its last `pip install`: a range edited in
    pyproject.toml since then is not what the test above checked."""
    pyproject = REPO / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    found = re.findall(r'^\s*"(lm-eval[^"]*)"', text, flags=re.M)
    assert len(found) == 1, f"{pyproject}: expected one lm-eval dependency, found {found}"
    declared = Requirement(found[0])
    installed = _declared_lmeval()
    assert (declared.specifier, declared.extras) == (installed.specifier, installed.extras), (
        f"pyproject.toml says {declared}, the installed calbench metadata says {installed}: "
        f"reinstall (make setup)"
    )


class FakeLM(LM):
    """A real lm-eval ``LM`` that answers each calbench doc with its gold answer at confidence
    0.8 and counts what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.generated: list[str] = []

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        return [(-1.0, True) for _ in requests]

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        return [-1.0 for _ in requests]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        for req in requests:
            context, _kwargs = req.args
            self.generated.append(context)
            gold = req.doc.get("gold", "x") if isinstance(req.doc, dict) else "x"
            out.append(f"<answer>{gold}</answer> <confidence>0.8</confidence>")
        return out

    def apply_chat_template(
        self, chat_history: list[dict], add_generation_prompt: bool = True
    ) -> str:
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in chat_history)

    @property
    def tokenizer_name(self) -> str:
        return "calbench-fake"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return "calbench-fake-template"


@pytest.fixture
def cache_log():
    """Messages lm-eval's request cache logs (logger ``lm_eval.api.model``, where calbench's
    resume note listens)."""
    logger = logging.getLogger("lm_eval.api.model")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def _requests(n: int) -> list[Instance]:
    return [
        Instance(
            request_type="generate_until",
            doc={"gold": str(i)},
            arguments=(f"question {i}", {"until": ["\n"], "do_sample": False}),
            idx=0,
        )
        for i in range(n)
    ]


def test_caching_lm_logs_cached_requests_and_skips_the_model(tmp_path, cache_log, capsys):
    from lm_eval.api.model import CachingLM

    from calbench.eval.run_task import ResumeNote

    db = str(tmp_path / "cache" / "requests.db")
    first = FakeLM()
    out1 = CachingLM(first, db).generate_until(_requests(2))
    assert out1 == [f"<answer>{i}</answer> <confidence>0.8</confidence>" for i in range(2)]
    assert len(first.generated) == 2

    second = FakeLM()
    out2 = CachingLM(second, db).generate_until(_requests(3))
    assert out2[:2] == out1 and second.generated == ["question 2"]  # only the new one ran
    counts = [m for m in cache_log if m.startswith("Cached requests:")]
    assert counts == [
        "Cached requests: 0, Requests remaining: 2",
        "Cached requests: 2, Requests remaining: 1",
    ]
    # calbench eval's resume note picks exactly these out of lm-eval's log
    capsys.readouterr()
    note = ResumeNote()
    for m in cache_log:
        note.emit(logging.makeLogRecord({"msg": m}))
    assert capsys.readouterr().err.splitlines() == [
        f"calbench eval: resume check: {m}" for m in counts
    ]


def test_hflm_and_api_model_interfaces_calbench_uses():
    from lm_eval.api.registry import get_model
    from lm_eval.models.api_models import JsonChatStr, TemplateAPI
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

    from calbench.eval.backends import openai as calbench_openai

    # elicit.py's shared-prefix sampler reads these off an HFLM
    for name in (
        "tok_batch_encode",
        "tok_decode",
        "eot_token_id",
        "max_length",
        "max_gen_toks",
        "batch_size",
        "device",
        "model",
        "tokenizer",
    ):
        assert hasattr(HFLM, name), f"HFLM.{name}"
    assert "self.backend" in inspect.getsource(HFLM)  # elicit._is_hf reads lm.backend
    assert get_model("hf") is HFLM
    assert callable(getattr(HFLM, "create_from_arg_obj", None))
    # logged samples turn this one-field NamedTuple into a 1-tuple (elicit._request_context)
    assert JsonChatStr._fields == ("prompt",)
    # calbench's API backends subclass these and override the request loop over their fields
    assert issubclass(calbench_openai.ChatCompletions, LocalChatCompletion)
    assert issubclass(calbench_openai.Completions, LocalCompletionsAPI)
    for cls in (LocalChatCompletion, LocalCompletionsAPI):
        assert issubclass(cls, TemplateAPI)
    init = inspect.getsource(TemplateAPI.__init__)
    for field in (
        "self._concurrent",
        "self._batch_size",
        "self._seed",
        "self.verify_certificate",
        "self.timeout",
        "self.max_retries",
    ):
        assert field in init, f"TemplateAPI.__init__ no longer sets {field}"
    for method in (
        "_create_payload",
        "create_message",
        "get_batched_requests",
        "model_call",
        "header",
        "api_key",
    ):
        assert hasattr(TemplateAPI, method), f"TemplateAPI.{method}"
    chat = LocalChatCompletion(
        base_url="http://127.0.0.1:9/v1/chat/completions",
        model="m",
        tokenizer_backend=None,
        num_concurrent=3,
        seed=7,
    )
    assert (chat._concurrent, chat._seed, chat._batch_size) == (3, 7, 1)


def test_generation_helpers_behave():
    from lm_eval.models.utils import chunks, handle_stop_sequences, postprocess_generated_text

    assert handle_stop_sequences(["\n\n"], eos="<eos>") == ["\n\n", "<eos>"]
    assert handle_stop_sequences(None, eos="<eos>") == ["<eos>"]
    assert (
        postprocess_generated_text(
            generation="<answer>4</answer>\n\nmore", stop=["\n\n"], think_end_token=None
        )
        == "<answer>4</answer>"
    )
    assert list(chunks([1, 2, 3], n=2)) == [[1, 2], [3]]


def test_tasks_path_prints_the_shipped_plugins():
    r = subprocess.run([*CLI, "tasks", "--path"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip())
    assert folder.is_dir() and (folder / "_calbench" / "base.yaml").is_file()
    tasks = available_tasks()
    shipped = {t.yaml_path.resolve() for t in tasks.values() if t.origin == "calbench"}
    assert shipped and shipped <= {p.resolve() for p in folder.glob("*.yaml")}
    # a flag it does not combine with is a usage error
    r = subprocess.run(
        [*CLI, "tasks", "show", "gsm8k", "--path"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "--path" in r.stderr


def test_lm_eval_runs_the_plugins_from_tasks_path_with_its_cache(tmp_path, cache_log):
    """What `lm_eval --include_path "$(calbench tasks --path)" --apply_chat_template
    --use_cache ...` does, on an in-process LM: lm-eval finds every calbench task, builds the
    docs through calbench's hooks, grades through process_results, and a rerun is served from
    its request cache."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    folder = subprocess.run(
        [*CLI, "tasks", "--path"], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    tm = TaskManager(
        include_path=[folder],
        include_defaults=False,
        metadata={"elicitation": "tags", "seed": 0, "size": 100},
    )
    names = {t.lmeval_task for t in available_tasks().values() if t.origin == "calbench"}
    assert names <= set(tm.all_tasks)

    def run(lm: FakeLM):
        return simple_evaluate(
            model=lm,
            tasks=["calbench_chain_sum"],
            task_manager=tm,
            limit=2,
            apply_chat_template=True,
            log_samples=True,
            bootstrap_iters=0,
            use_cache=str(tmp_path / "requests"),
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )

    lm = FakeLM()
    out = run(lm)
    assert len(lm.generated) == 2 and all("<answer>" in c for c in lm.generated)  # tags prompt
    res = out["results"]["calbench_chain_sum"]
    assert res["correct,none"] == 1.0 and res["confidence,none"] == pytest.approx(0.8)
    records = lmeval_samples_to_records(out["samples"]["calbench_chain_sum"], task="chain_sum")
    assert [(r["correct"], r["confidence"]) for r in records] == [(True, 0.8), (True, 0.8)]

    again = FakeLM()
    run(again)
    assert again.generated == []
    assert "Cached requests: 2, Requests remaining: 0" in cache_log
