"""How calbench asks a model for an answer and a verbalized confidence ("elicitation").

One function, :func:`build_prompt`, turns a question into chat messages plus an optional
assistant prefill; the evaluator and the trainer both call it so a trained model sees exactly the
prompt it is later evaluated with. The wording is calbench's own.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You answer questions and say how sure you are. Your confidence is the probability, between "
    "0 and 1, that your answer is correct."
)

_TAGS_INSTRUCTION = (
    "{question}\n\n"
    "Think briefly if you need to. Then give your final answer inside <answer></answer> tags and "
    "your confidence that the answer is correct, a number between 0 and 1, inside "
    "<confidence></confidence> tags, like this:\n"
    "<answer>YOUR ANSWER</answer> <confidence>PROBABILITY</confidence>"
)

# Prefill starts the assistant turn with the tag, so even a small model that ignores the
# instruction writes its answer where the parser looks for it.
PREFILL = "<answer>"


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]  # chat messages (system + user)
    prefill: str  # text the assistant turn starts with ("" for none); part of the response

    @property
    def user(self) -> str:
        return self.messages[-1]["content"]


ELICITATIONS = ("tags", "prefill")


def build_prompt(question: str, elicitation: str = "tags") -> Prompt:
    """Chat messages and assistant prefill asking ``question`` under ``elicitation``."""
    if elicitation not in ELICITATIONS:
        raise ValueError(f"unknown elicitation {elicitation!r}; choose from {ELICITATIONS}")
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _TAGS_INSTRUCTION.format(question=question.strip())},
    ]
    return Prompt(messages, PREFILL if elicitation == "prefill" else "")
