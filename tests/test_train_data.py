"""The chain_sum train / held-out splits and the warm-up targets."""

from __future__ import annotations

import pytest

from calbench.core.chain_sum import TEST_POOL, chain_sum_items, difficulty_bin
from calbench.core.grade import math_equal
from calbench.core.parse import extract_answer, has_format, parse_confidence
from calbench.train.warmup import CONFIDENCE_GRID, WARMUP_OFFSET, warmup_examples


def test_items_shape_and_ids() -> None:
    items = chain_sum_items("test", 20)
    assert [it["id"] for it in items] == [f"chain_sum/test/{i}" for i in range(20)]
    for it in items:
        assert set(it) == {"id", "question", "gold", "meta"}
        m = it["meta"]
        assert 2 <= m["num_terms"] <= 3 and 1 <= m["num_digits"] <= 2
        assert it["question"].endswith(f"{m['expression']} =")
        assert int(it["gold"]) == eval(m["expression"])  # noqa: S307 - digits and +/- only
        assert difficulty_bin(m) == f"{m['num_terms']}t{m['num_digits']}d"


def test_deterministic_and_prefix_stable() -> None:
    assert chain_sum_items("train", 30, seed=3) == chain_sum_items("train", 30, seed=3)
    assert chain_sum_items("test", 50)[:10] == chain_sum_items("test", 10)
    assert chain_sum_items("train", 40)[:15] == chain_sum_items("train", 15)
    assert chain_sum_items("train", 10, seed=1) != chain_sum_items("train", 10, seed=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_train_and_test_are_disjoint(seed: int) -> None:
    test_q = {it["question"] for it in chain_sum_items("test", TEST_POOL, seed)}
    assert len(test_q) == TEST_POOL  # distinct
    train = chain_sum_items("train", 4000, seed)
    assert not test_q & {it["question"] for it in train}
    warm = warmup_examples(200, seed)
    assert not test_q & {ex["question"] for ex in warm}


def test_val_split_is_held_out_from_rl_warmup_and_test() -> None:
    from calbench.core.chain_sum import VAL_OFFSET

    val = chain_sum_items("val", 200)
    assert val == chain_sum_items("val", 400)[:200]  # deterministic prefix
    assert all(it["id"].startswith("chain_sum/val/") for it in val)
    idx = [it["meta"]["source_index"] for it in val]
    assert min(idx) >= VAL_OFFSET  # far from RL (stream index 0 on) and the warm-up (10^6 on)
    assert VAL_OFFSET > WARMUP_OFFSET + 10_000
    test_q = {it["question"] for it in chain_sum_items("test", TEST_POOL)}
    assert not test_q & {it["question"] for it in val}
    assert {difficulty_bin(it["meta"]) for it in val} == {"2t1d", "2t2d", "3t1d", "3t2d"}
    with pytest.raises(ValueError):
        chain_sum_items("val", 3, offset=5)


def test_all_difficulty_bins_present_in_test() -> None:
    bins = {difficulty_bin(it["meta"]) for it in chain_sum_items("test", 200)}
    assert bins == {"2t1d", "2t2d", "3t1d", "3t2d"}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        chain_sum_items("dev", 3)
    with pytest.raises(ValueError):
        chain_sum_items("test", TEST_POOL + 1)
    with pytest.raises(ValueError):
        chain_sum_items("test", 3, offset=5)
    from calbench.core.chain_sum import VAL_OFFSET

    with pytest.raises(ValueError):  # a train stretch may not run into the validation split
        chain_sum_items("train", 3, offset=VAL_OFFSET)


def test_warmup_targets_teach_the_format_without_leaking_correctness() -> None:
    ex = warmup_examples(300, seed=0)
    assert len({e["question"] for e in ex}) > 250
    # the warm-up stretch of the train stream is not the RL stretch
    rl = {it["id"] for it in chain_sum_items("train", 300)}
    assert not rl & {f"chain_sum/train/{i}" for i in range(WARMUP_OFFSET, WARMUP_OFFSET + 10)}
    confs = []
    for e in ex:
        assert has_format(e["target"])
        assert math_equal(extract_answer(e["target"]), e["gold"])
        confs.append(parse_confidence(e["target"]))
    assert set(confs) <= set(CONFIDENCE_GRID)
    assert len(set(confs)) == len(CONFIDENCE_GRID)  # a spread, every grid value used
    assert 0.4 < sum(confs) / len(confs) < 0.6
    pre = warmup_examples(5, seed=0, elicitation="prefill")
    assert all(not e["target"].startswith("<answer>") for e in pre)
    assert all(has_format("<answer>" + e["target"]) for e in pre)
    bare = warmup_examples(5, seed=0, work="none")
    assert all(e["target"].startswith("<answer>") for e in bare)


def test_worked_steps_reduce_the_chain_left_to_right() -> None:
    from calbench.train.warmup import worked_steps

    assert worked_steps("98 + 93 - 77") == "98 + 93 - 77 = 191 - 77 = 114"
    assert worked_steps("1 - 7 - 8") == "1 - 7 - 8 = -6 - 8 = -14"
    assert worked_steps("3 + 8") == "3 + 8 = 11"
    # every warm-up target's last step is the gold answer, and the answer tag follows the work
    for e in warmup_examples(200, seed=1):
        work, _, rest = e["target"].partition("\n")
        assert work.split(" = ")[-1] == e["gold"] and rest.startswith("<answer>")
    with pytest.raises(ValueError):
        worked_steps("3 * 8")
    from calbench.core.errors import UsageError

    with pytest.raises(UsageError):
        warmup_examples(2, work="cot")


def test_stratified_order_cycles_the_bins_and_stays_out_of_test() -> None:
    from calbench.core.chain_sum import stratified_train_items

    items = stratified_train_items(40, seed=0)
    bins = [difficulty_bin(x["meta"]) for x in items]
    assert len(items) == 40 and len({x["id"] for x in items}) == 40
    for k in range(0, 40, 4):  # every step of 4 questions holds one question of each bin
        assert sorted(bins[k : k + 4]) == ["2t1d", "2t2d", "3t1d", "3t2d"]
    test = {x["question"] for x in chain_sum_items("test", 500, 0)}
    assert not any(x["question"] in test for x in items)
    assert stratified_train_items(40, seed=0) == items  # deterministic
    stream_ids = {x["id"] for x in chain_sum_items("train", 400, 0)}
    assert {x["id"] for x in items} <= stream_ids  # same items as the stream, reordered
