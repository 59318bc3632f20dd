"""How calbench asks a model for an answer and a verbalized confidence ("elicitation").

:func:`build_prompt` turns a question into chat messages plus an optional assistant prefill; the
evaluator and the trainer both call it, so a trained model sees exactly the prompt it is later
evaluated with. All wording is calbench's own.

Single-request elicitations (the answer and the confidence come from one response):

* ``tags`` — instruction only: answer in ``<answer>``, probability in ``<confidence>``;
* ``percent`` — the same, but the confidence is asked for as a percentage (0–100%);
* ``rlcr`` — the RLCR paper's protocol: ``<think>``, ``<answer>``, ``<analysis>``,
  ``<confidence>``, so its released models are evaluated as trained;
* ``prefill`` — ``tags`` with the assistant turn starting ``<answer>``.

Multi-request elicitations (:mod:`calbench.eval.elicit` runs the extra requests): the first request
asks only for the answer (:data:`ANSWER_ONLY`, prefilled with ``<answer>``), then

* ``two-stage`` — a second turn asks how likely that answer is correct (:func:`stage_two`);
* ``logprob`` — confidence = the probability the model gives its own answer tokens;
* ``consistency`` — k sampled answers; answer = majority, confidence = its share.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You answer questions and say how sure you are. Your confidence is the probability, between "
    "0 and 1, that your answer is correct."
)

_INSTRUCTIONS = {
    "tags": (
        "Think briefly if you need to. Then give your final answer inside <answer></answer> "
        "tags and your confidence that the answer is correct, a number between 0 and 1, inside "
        "<confidence></confidence> tags."
    ),
    "percent": (
        "Think briefly if you need to. Then give your final answer inside <answer></answer> "
        "tags and your confidence that the answer is correct, as a percentage from 0% to 100%, "
        "inside <confidence></confidence> tags."
    ),
    "rlcr": (
        "First reason about the question step by step inside <think></think> tags. Then give "
        "your final answer inside <answer></answer> tags. Then, inside <analysis></analysis> "
        "tags, weigh how likely it is that your answer is right: what could be wrong with it. "
        "Finally give that likelihood, a number between 0 and 1, inside "
        "<confidence></confidence> tags."
    ),
    "answer": (
        "Think briefly if you need to. Then give your final answer inside <answer></answer> tags."
    ),
}
_STAGE_TWO = (
    "How likely is it that your answer above is correct? Reply with a probability between 0 "
    "and 1 inside <confidence></confidence> tags."
)

# Prefill starts the assistant turn with the tag, so even a small model that ignores the
# instruction writes its answer where the parser looks for it.
PREFILL = "<answer>"
CONFIDENCE_PREFILL = "<confidence>"

SINGLE_PASS = ("tags", "percent", "rlcr", "prefill")
MULTI_PASS = ("two-stage", "logprob", "consistency")
ELICITATIONS = SINGLE_PASS + MULTI_PASS
# What the first request of each elicitation looks like: (instruction key, prefill).
_FIRST_REQUEST = {
    "tags": ("tags", ""),
    "percent": ("percent", ""),
    "rlcr": ("rlcr", ""),
    "prefill": ("tags", PREFILL),
    "two-stage": ("answer", PREFILL),
    "logprob": ("answer", PREFILL),
    "consistency": ("answer", PREFILL),
}


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]  # chat messages (system + user [+ earlier turns])
    prefill: str  # text the assistant turn starts with ("" for none); part of the response

    @property
    def user(self) -> str:
        return self.messages[-1]["content"]


def check_elicitation(elicitation: str) -> None:
    if elicitation not in ELICITATIONS:
        raise ValueError(
            f"unknown elicitation {elicitation!r}; choose from {', '.join(ELICITATIONS)}"
        )


def build_prompt(question: str, elicitation: str = "tags") -> Prompt:
    """Chat messages and assistant prefill of the first request under ``elicitation``."""
    check_elicitation(elicitation)
    key, prefill = _FIRST_REQUEST[elicitation]
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{question.strip()}\n\n{_INSTRUCTIONS[key]}"},
    ]
    return Prompt(messages, prefill)


def stage_two(first: Prompt, response: str) -> Prompt:
    """The two-stage follow-up: the first exchange, then "how likely is that answer correct?"."""
    messages = [
        *first.messages,
        {"role": "assistant", "content": response.strip()},
        {"role": "user", "content": _STAGE_TWO},
    ]
    return Prompt(messages, CONFIDENCE_PREFILL)


def template_sha256(elicitation: str) -> str:
    """Hash of everything that shapes the prompt of ``elicitation`` (recorded per run)."""
    key, prefill = _FIRST_REQUEST[elicitation]
    parts = [SYSTEM_PROMPT, _INSTRUCTIONS[key], prefill]
    if elicitation == "two-stage":
        parts += [_STAGE_TWO, CONFIDENCE_PREFILL]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
