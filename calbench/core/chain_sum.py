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


def _dataset(base_seed: int):
    # lazy: reasoning-gym +0.8-3 s at import (python -X importtime); the loaders and the
    # trainer's data modules import this module without always generating questions
    from reasoning_gym.arithmetic.chain_sum import ChainSumConfig, ChainSumDataset

    # size only bounds len(); items are generated on demand from (seed + index).
    return ChainSumDataset(ChainSumConfig(seed=base_seed, size=_SEED_STRIDE, **CONFIG))


def _stream(
    base_seed: int,
    n: int,
    exclude: frozenset[str] = frozenset(),
    distinct: bool = True,
    start: int = 0,
) -> list[dict]:
    ds = _dataset(base_seed)
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
