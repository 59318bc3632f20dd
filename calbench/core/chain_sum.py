"""Training / held-out questions for the RLCR trainer: ``reasoning-gym``'s ``chain_sum``.

Why this task: SmolLM2-135M is at the floor on GSM-Symbolic (0/30 in a probe), but short chains
of additions and subtractions (2–3 terms of 1–2 digits) it learns to work out step by step (39%
of the 500 held-out after the format warm-up), and how often it is right depends visibly on the item
(``4 - 1`` vs ``98 + 93 - 77``). That spread is what a confidence can learn;
``meta["num_terms"]`` / ``meta["num_digits"]`` give difficulty bins.

Splits. reasoning-gym seeds each item with ``random.Random(seed + index)``, so datasets with
seeds 0 and 1 are the *same* stream shifted by one item. The train and test streams therefore start
10^9 apart (and each run seed moves both by 10^7), and on top of that every question of the
test pool (the first :data:`TEST_POOL` distinct test questions) is removed from train. The price:
there are only 200 distinct 1-digit 2-term questions and the test pool holds about half of them,
so that easiest bin is ~12% of train instead of ~25% (train is a little harder than test).

Grading: reasoning-gym's own scorer is exact string match; calbench grades with
:func:`calbench.core.grade.math_equal` (numeric equality of the final number, then math-verify).
"""

from __future__ import annotations

from functools import lru_cache

from calbench.core.errors import UsageError

TASK = "chain_sum"
CONFIG = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}
TEST_POOL = 500  # the most test items one seed offers; all of them are kept out of train
# Train-stream index where the validation split starts: far from RL (index 0 on) and from the
# format warm-up (warmup.WARMUP_OFFSET = 10^6), so recipes can be compared on questions no run
# trained on without touching the test pool. The stream repeats questions (there are only ~100
# distinct 2-term 1-digit questions outside the test pool), so the easiest bin of val overlaps
# what RL saw; the other bins almost never do.
VAL_OFFSET = 3_000_000
SPLITS = ("train", "val", "test")
_TEST_BASE = 1_000_000_000
_SEED_STRIDE = 10_000_000


def _dataset(base_seed: int, config: dict[str, int] | None = None):
    # lazy: reasoning-gym +0.8-3 s at import (python -X importtime); the loaders and the
    # trainer's data modules import this module without always generating questions
    from reasoning_gym.arithmetic.chain_sum import ChainSumConfig, ChainSumDataset

    # size only bounds len(); items are generated on demand from (seed + index).
    cfg = ChainSumConfig(seed=base_seed, size=_SEED_STRIDE, **(config or CONFIG))
    return ChainSumDataset(cfg)


def _stream(
    base_seed: int,
    n: int,
    exclude: frozenset[str] = frozenset(),
    distinct: bool = True,
    start: int = 0,
    config: dict[str, int] | None = None,
) -> list[dict]:
    ds = _dataset(base_seed, config)
    seen: set[str] = set()
    out = []
    idx = start
    while len(out) < n:
        if idx >= _SEED_STRIDE:  # pragma: no cover - far beyond any sensible n
            raise ValueError(f"cannot find {n} distinct {TASK} questions")
        item = ds[idx]
        idx += 1
        q = item["question"]
        if (distinct and q in seen) or q in exclude:
            continue
        seen.add(q)
        out.append(item)
    return out


@lru_cache(maxsize=8)
def _test_pool(seed: int) -> tuple[dict, ...]:
    return tuple(_stream(_TEST_BASE + seed * _SEED_STRIDE, TEST_POOL))


@lru_cache(maxsize=8)
def _test_questions(seed: int) -> frozenset[str]:
    return frozenset(item["question"] for item in _test_pool(seed))


def _record(split: str, i: int, seed: int, item: dict) -> dict:
    meta = item["metadata"]
    return {
        # test: position in the distinct test pool; train, val: index in the train stream
        "id": f"{TASK}/{split}/{i if split == 'test' else int(meta['source_index'])}",
        "question": item["question"],
        "gold": item["answer"],
        "meta": {
            "num_terms": int(meta["num_terms"]),
            "num_digits": int(meta["num_digits"]),
            "expression": meta["expression"],
            "source_index": int(meta["source_index"]),
            "seed": seed,
        },
    }


def chain_sum_items(split: str, n: int, seed: int = 0, *, offset: int = 0) -> list[dict]:
    """``n`` chain-sum questions of ``split`` ("train", "val" or "test") for run seed ``seed``.

    Each item is ``{"id", "question", "gold", "meta": {"num_terms", "num_digits", ...}}``; ids
    are ``chain_sum/test/<i>`` (position in the test pool) and ``chain_sum/train/<j>`` (index
    in the train stream). Pure and deterministic: the same arguments give the same items, and the
    first k items of a larger n are the items of n = k. ``offset`` (train only) starts the train
    stream at index ``offset``, for a second disjoint stretch of it (the format warm-up uses one). Train and test never
    share a question. Test offers at most :data:`TEST_POOL` items per seed. "val" is the train
    stream from :data:`VAL_OFFSET` on (ids ``chain_sum/val/<j>``): for choosing a recipe without
    the test set.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if n < 0:
        raise ValueError("n must be >= 0")
    if split != "train" and offset:
        raise ValueError("offset applies to the train split only")
    if split == "test":
        if n > TEST_POOL:
            raise ValueError(f"the {TASK} test split has {TEST_POOL} items per seed; asked {n}")
        items = list(_test_pool(seed)[:n])
    else:
        if split == "val":
            offset = VAL_OFFSET
        elif not 0 <= offset < VAL_OFFSET:  # a train stretch never reaches val
            raise ValueError(f"offset must lie in [0, {VAL_OFFSET})")
        items = _stream(
            seed * _SEED_STRIDE, n, exclude=_test_questions(seed), distinct=False, start=offset
        )
    return [_record(split, i, seed, item) for i, item in enumerate(items)]


def difficulty_bin(meta: dict) -> str:
    """A short label for per-difficulty reports: ``"2t1d"`` = 2 terms of 1 digit."""
    return f"{meta['num_terms']}t{meta['num_digits']}d"


def stratified_train_items(n: int, seed: int = 0) -> list[dict]:
    """``n`` train questions ordered so that the difficulty bins take turns (2t1d, 2t2d, 3t1d,
    3t2d, 2t1d, …): any slice of 4 consecutive items holds one of each.

    Why: in the plain stream the easy bins are rare (2t1d is ~12% of train, see above), so most
    RL steps hold only questions the model gets wrong every time; all-wrong groups only teach
    "say lower", and the confidence collapsed to the base rate in a probe. With every bin in every
    step, each step contrasts questions the model often gets right with ones it never does.
    Items are the train stream's in order within each bin (same ids as
    :func:`chain_sum_items`), so the result is deterministic and never touches the test pool."""
    need = -(-n // 4)  # per bin
    size = 8 * n + 64
    while True:
        pool = chain_sum_items("train", size, seed)
        bins = {}
        for item in pool:
            bins.setdefault(difficulty_bin(item["meta"]), []).append(item)
        if len(bins) == 4 and min(len(v) for v in bins.values()) >= need:
            break
        size *= 2
    order = sorted(bins)
    return [bins[order[i % 4]][i // 4] for i in range(n)]


# --------------------------------------------------------------------------------------------
# Shifted evaluation tasks: held-out sums outside the training distribution
# --------------------------------------------------------------------------------------------
#
# Training sees 2–3 terms of 1–2 digits written as ``a + b - c =``. Each shift changes one thing:
# more terms, longer numbers (reasoning-gym chain_sum with another config, a stream of its own),
# or how the test pool's own sums are written (numbers and operators in words: they pair
# question by question with the ``chain_sum`` test split, and like it never meet a training
# question). Kept where the format warm-up is right 10–90% of the time (measured in
# docs/reference-models.md). Tried and dropped, the warm-up being right less often: 5 terms of
# 1 digit (6.5%) and the test sums told as word problems (2%).

# variant -> reasoning-gym ChainSumConfig, each from its own stream (base seed below + run seed ×
# 10^7): none of these sizes occurs in training, so they never meet a train or test question.
SHIFT_CONFIGS: dict[str, dict[str, int]] = {
    "4terms": {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1},
    "3digits": {"min_terms": 2, "max_terms": 2, "min_digits": 3, "max_digits": 3},
}
_SHIFT_BASES = {"4terms": 2_000_000_000, "3digits": 3_000_000_000}
# variants that reword the test pool's sums
WORDED = ("spelled",)
SHIFTS = (*SHIFT_CONFIGS, *WORDED)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
_ONES += "fifteen sixteen seventeen eighteen nineteen"
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety"


def spell_number(n: int) -> str:
    """English words for 0 <= n <= 99: ``42`` -> ``"forty-two"``."""
    if not 0 <= n <= 99:
        raise ValueError(f"spell_number covers 0..99, not {n}")
    ones, tens = _ONES.split(), _TENS.split()
    if n < 20:
        return ones[n]
    return tens[n // 10] + ("" if n % 10 == 0 else "-" + ones[n % 10])


def _terms(expression: str) -> tuple[int, list[tuple[str, int]]]:
    """``"2 + 3 - 9"`` -> ``(2, [("+", 3), ("-", 9)])``."""
    parts = expression.split()
    return int(parts[0]), [(parts[i], int(parts[i + 1])) for i in range(1, len(parts), 2)]


def _spelled(expression: str) -> str:
    first, steps = _terms(expression)
    words = [spell_number(first)]
    for op, n in steps:
        words += ["plus" if op == "+" else "minus", spell_number(n)]
    return "State the final answer to the following arithmetic problem: " + " ".join(words) + " ="


def shifted_items(variant: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` questions of the shifted task ``variant`` (one of :data:`SHIFTS`) for run seed
    ``seed``; items as :func:`chain_sum_items`, ids ``chain_sum_<variant>/s<seed>/<i>``.

    ``4terms`` / ``3digits``: distinct reasoning-gym chain sums of that size (at most
    :data:`TEST_POOL` per seed, like the test split). ``spelled``: the first ``n`` questions of
    the ``chain_sum`` test split of the same seed with numbers and operators in English words —
    item i is test item i, so the two compare question by question. Pure and deterministic; the
    first k items of a larger n are the items of n = k.
    """
    if variant not in SHIFTS:
        raise ValueError(f"unknown chain_sum shift {variant!r}; known: {', '.join(SHIFTS)}")
    if not 0 <= n <= TEST_POOL:
        raise ValueError(f"a shifted chain_sum task has 0..{TEST_POOL} items per seed; asked {n}")
    out = []
    if variant in WORDED:
        for rec in chain_sum_items("test", n, seed):
            meta = {**rec["meta"], "test_id": rec["id"]}
            out.append({**rec, "question": _spelled(rec["meta"]["expression"]), "meta": meta})
    else:
        base = _SHIFT_BASES[variant] + seed * _SEED_STRIDE
        items = _stream(base, n, config=SHIFT_CONFIGS[variant])
        out = [_record("shift", i, seed, item) for i, item in enumerate(items)]
    for i, rec in enumerate(out):
        rec["id"] = f"chain_sum_{variant}/s{seed}/{i}"
    return out


def load_chain_sum_shift(
    variant: str = "", size: int = TEST_POOL, seed: int = 0, task: str = "", **_: object
) -> list[dict]:
    """Loader of the shifted ``chain_sum_*`` task plugins (their YAML's metadata names the
    ``variant``); a bad variant or size is a usage error naming the task."""
    try:
        return shifted_items(variant, int(size), seed=int(seed))
    except ValueError as e:
        raise UsageError(f"task {task or variant!r}: {e}") from None
