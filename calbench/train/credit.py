"""Credit assignment over response tokens: which tokens state the confidence (and which one is its
tenths digit), and group-relative advantages.

Tokens before the last ``<confidence>`` tag (reasoning and answer) are "answer tokens"; the tag and
everything after it are "confidence tokens". Split credit gives each kind the advantage of its own
reward term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from calbench.core.errors import UsageError
from calbench.train.rollout import Rollout

DIGITS = tuple(str(d) for d in range(10))


def confidence_start(tokenizer: Any, ids: Sequence[int], completion: str) -> int | None:
    """Index of the first token of the last ``<confidence>`` tag in a response, or None.
    Found by binary search on the length of decoded prefixes."""
    at = completion.lower().rfind("<confidence>")
    if at < 0:
        return None
    lo, hi = 1, len(ids)  # smallest k with len(decode(ids[:k])) > at
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=True)) > at:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


def confidence_masks(tokenizer: Any, ro: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence-token mask [B*G, T], has-confidence-span [B*G]) as floats."""
    n, T = ro.response_ids.shape
    conf = torch.zeros(n, T, device=ro.response_ids.device)
    has = torch.zeros(n, device=ro.response_ids.device)
    for i in range(n):
        length = int(ro.response_mask[i].sum())
        start = confidence_start(tokenizer, ro.response_ids[i, :length].tolist(), ro.completions[i])
        if start is not None:
            conf[i, start:length] = 1.0
            has[i] = 1.0
    return conf, has


def confidence_digit(tokenizer: Any, ids: Sequence[int], start: int | None) -> int | None:
    """Index of the tenths digit in a confidence written exactly as ``0.d``, else None.

    ``start`` is the index of the confidence tag's first token (:func:`confidence_start`). The
    tokenizer must write digits as single tokens (SmolLM2, Llama 3, Qwen do)."""
    if start is None:
        return None
    pieces = [tokenizer.decode([i]) for i in ids[start:]]
    for k in range(len(pieces) - 2):
        if pieces[k].strip() == "0" and pieces[k + 1] == "." and pieces[k + 2] in DIGITS:
            after = pieces[k + 3] if k + 3 < len(pieces) else ""
            return start + k + 2 if not after[:1].isdigit() else None
    return None


def group_advantages(
    r: torch.Tensor, group: int, norm: str, std_floor: float = 0.0
) -> torch.Tensor:
    """Group-relative advantages: subtract each group's mean; with ``norm="std"`` also divide
    by the group's std, floored at ``std_floor`` (a group whose rewards barely differ — all
    wrong under RLCR, rewards −q² — would otherwise have its tiny differences blown up to ±1)."""
    g = r.view(-1, group)
    a = g - g.mean(dim=1, keepdim=True)
    if norm == "std":
        std = g.std(dim=1, keepdim=True, unbiased=False) if group > 1 else torch.ones_like(a)
        a = a / std.clamp(min=max(std_floor, 1e-6))
    elif norm != "mean":
        raise UsageError(f"advantage normalisation must be 'std' or 'mean', not {norm!r}")
    return a.reshape(-1)
