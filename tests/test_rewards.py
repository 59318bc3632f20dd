"""Calibration rewards: values, never-NaN, prefill and TRL formats, properness."""

from __future__ import annotations

import math

import pytest

from calbench.train.rewards import (
    METHODS,
    REWARDS,
    asymmetric_optimum,
    completion_text,
    expected_reward,
    format_reward,
    optimal_confidence,
    score_completions,
)
from calbench.train.verl_reward import compute_score, verl_rows

RIGHT, WRONG, GOLD = "7", "8", "7"


def resp(answer: str, q: str) -> str:
    return f"<answer>{answer}</answer> <confidence>{q}</confidence>"


def test_registry_names() -> None:
    assert set(REWARDS) == {"rlvr", "rlcr", "brier", "log", "asymmetric"}
    assert set(METHODS) == set(REWARDS)


@pytest.mark.parametrize(
    ("method", "answer", "q", "expected"),
    [
        ("rlvr", RIGHT, "0.3", 1.0),
        ("rlvr", WRONG, "0.3", 0.0),
        ("rlcr", RIGHT, "0.8", 1.0 - 0.04),
        ("rlcr", WRONG, "0.8", -0.64),
        ("brier", RIGHT, "0.8", -0.04),
        ("brier", WRONG, "0.25", -0.0625),
        ("log", RIGHT, "0.5", 1.0 + math.log(0.5)),
        ("log", WRONG, "0.2", math.log(0.8)),
        ("log", WRONG, "1", math.log(1e-3)),  # clipped, finite
        ("asymmetric", RIGHT, "0.6", 0.6),
        ("asymmetric", WRONG, "0.6", -(0.6**2.5)),
    ],
)
def test_reward_values(method: str, answer: str, q: str, expected: float) -> None:
    (r,) = REWARDS[method]([resp(answer, q)], [GOLD])
    assert r == pytest.approx(expected, abs=1e-9)


UNPARSEABLE = [
    "<answer>7</answer>",  # no confidence
    "<answer>7</answer> <confidence>high</confidence>",
    "<answer>7</answer> <confidence>nan</confidence>",
    "<answer>7</answer> <confidence>inf</confidence>",
    "<answer>7</answer> <confidence>150</confidence>",
    "<answer>7</answer> <confidence>0.3 or 0.4</confidence>",
    "<answer>7</answer> <confidence>0.9 or so",  # unclosed, not a number
    "",
]


@pytest.mark.parametrize("method", sorted(REWARDS))
@pytest.mark.parametrize("text", UNPARSEABLE)
def test_unparseable_confidence_is_finite_and_never_beats_a_stated_one(
    method: str, text: str
) -> None:
    for gold in ("7", "8"):  # the same text graded right and wrong
        (r,) = REWARDS[method]([text], [gold])
        assert math.isfinite(r)
        answer = "7" if "<answer>7" in text else "none"
        stated = [REWARDS[method]([resp(answer, f"{q / 10:.1f}")], [gold])[0] for q in range(11)]
        assert r <= min(stated) + 1e-12


def test_all_unparseable_group_has_finite_rewards() -> None:
    # The RLCR code's NaN poisoned a whole GRPO group's mean and std.
    rs = REWARDS["rlcr"](UNPARSEABLE, ["7"] * len(UNPARSEABLE))
    mean = sum(rs) / len(rs)
    assert all(math.isfinite(r) for r in rs) and math.isfinite(mean)


def test_trl_chat_completions_equal_strings() -> None:
    texts = [resp(RIGHT, "0.7"), resp(WRONG, "0.2")]
    chats = [[{"role": "assistant", "content": t}] for t in texts]
    for f in REWARDS.values():
        assert f(chats, [GOLD, GOLD]) == f(texts, [GOLD, GOLD])


def test_prefill_restored() -> None:
    sampled = "7</answer> <confidence>0.8</confidence>"
    (with_kw,) = REWARDS["rlcr"]([sampled], [GOLD], prefill="<answer>")
    (auto,) = REWARDS["rlcr"]([sampled], [GOLD])  # closing tag without opening: auto-fixed
    (full,) = REWARDS["rlcr"]([resp(RIGHT, "0.8")], [GOLD], prefill="<answer>")  # not doubled
    assert with_kw == auto == full == pytest.approx(0.96)
    assert completion_text(resp(RIGHT, "0.8"), "<answer>").count("<answer>") == 1
    # a per-row prefill column, as TRL passes it
    assert REWARDS["rlvr"]([sampled, sampled], [GOLD, "9"], prefill=["<answer>", "<answer>"]) == [
        1.0,
        0.0,
    ]


def test_graders_selectable() -> None:
    text = resp("The answer is 7.", "0.5")
    assert REWARDS["rlvr"]([text], [GOLD]) == [1.0]  # math_equal: final number
    assert REWARDS["rlvr"]([text], [GOLD], grader="exact") == [0.0]
    assert REWARDS["rlvr"]([resp("7", "0.5"), text], [GOLD, GOLD], grader=["exact", "math"]) == [
        1.0,
        1.0,
    ]
    with pytest.raises(ValueError):
        REWARDS["rlvr"]([text], [GOLD], grader="nope")


def test_format_term() -> None:
    ok, bad = resp(RIGHT, "0.8"), "<answer>7</answer>"
    base = REWARDS["rlcr"]([ok, bad], [GOLD, GOLD])
    withf = REWARDS["rlcr"]([ok, bad], [GOLD, GOLD], format_weight=0.5)
    assert withf[0] == pytest.approx(base[0] + 0.5)
    assert withf[1] == pytest.approx(base[1])
    assert format_reward([ok, bad]) == [1.0, 0.0]


def test_trl_extra_columns_are_accepted() -> None:
    out = REWARDS["rlcr"](
        prompts=["p"],
        completions=[resp(RIGHT, "1")],
        gold=["7"],
        completion_ids=[[1, 2]],
        trainer_state=None,
        id=["x"],
    )
    assert out == [1.0]


def test_score_completions_grades_each_answer_once() -> None:
    calls = []

    def grader(pred: str | None, gold: str) -> bool:
        calls.append(pred)
        return pred == gold

    scored = score_completions(
        [resp("7", "0.1"), resp("7", "0.9"), resp("3", "0.5")], "7", grader=grader
    )
    assert [s.correct for s in scored] == [True, True, False]
    assert sorted(calls) == ["3", "7"]


# ------------------------------------------------------------------------------------------
# Properness: the q that maximises expected reward when P(correct) = p
# ------------------------------------------------------------------------------------------

PS = (0.1, 0.3, 0.5, 0.7, 0.9)
Q_GRID = [i / 1000 for i in range(1001)]


def empirical_optimum(method: str, p: float) -> float:
    """argmax_q  p·R(right, q) + (1−p)·R(wrong, q), computed with the real reward function on
    real response strings."""
    f = REWARDS[method]
    right = f([resp(RIGHT, f"{q:.3f}") for q in Q_GRID], GOLD)
    wrong = f([resp(WRONG, f"{q:.3f}") for q in Q_GRID], GOLD)
    values = [p * r + (1 - p) * w for r, w in zip(right, wrong, strict=True)]
    best = max(values)
    return Q_GRID[values.index(best)]


@pytest.mark.parametrize("method", ["rlcr", "brier", "log"])
@pytest.mark.parametrize("p", PS)
def test_proper_rewards_are_maximised_by_the_true_probability(method: str, p: float) -> None:
    assert empirical_optimum(method, p) == pytest.approx(p, abs=1e-3)
    assert optimal_confidence(method, p) == pytest.approx(p, abs=1e-3)


@pytest.mark.parametrize(
    ("p", "q_star"), [(0.1, 0.1255), (0.3, 0.3086), (0.5, 0.5429), (0.7, 0.9549), (0.9, 1.0)]
)
def test_asymmetric_reward_rewards_overconfidence(p: float, q_star: float) -> None:
    assert asymmetric_optimum(p) == pytest.approx(q_star, abs=1e-3)
    assert empirical_optimum("asymmetric", p) == pytest.approx(asymmetric_optimum(p), abs=2e-3)


def test_asymmetric_saturates_at_one_from_p_0714() -> None:
    assert asymmetric_optimum(2.5 / 3.5) == pytest.approx(1.0)
    assert asymmetric_optimum(0.70) < 1.0
    assert asymmetric_optimum(0.72) == 1.0
    assert optimal_confidence("asymmetric", 0.72) == 1.0


def test_rlvr_ignores_confidence() -> None:
    vals = {expected_reward("rlvr", q / 10, 0.4) for q in range(11)}
    assert vals == {0.4}


def test_log_score_unbounded_rule_prefers_a_surely_wrong_answer() -> None:
    # correctness + log score: an answer known to be wrong, stated at q = 0, beats an honest
    # 50/50 answer; correctness + Brier (bounded) does not.
    assert expected_reward("log", 0.0, 0.0) > expected_reward("log", 0.5, 0.5)
    assert expected_reward("log", 0.0, 0.0) == pytest.approx(math.log(1 - 1e-3))
    assert expected_reward("log", 0.5, 0.5) == pytest.approx(0.5 + math.log(0.5))
    assert expected_reward("rlcr", 0.0, 0.0) < expected_reward("rlcr", 0.5, 0.5)


# ------------------------------------------------------------------------------------------
# verl adapter
# ------------------------------------------------------------------------------------------


def test_verl_compute_score_matches_trl_reward() -> None:
    for method, f in REWARDS.items():
        for text, gold in [
            (resp(RIGHT, "0.7"), "7"),
            (resp(WRONG, "0.7"), "7"),
            ("<answer>7</answer>", "7"),
            ("garbage", "7"),
        ]:
            out = compute_score("calbench/chain_sum", text, gold, None, method=method)
            assert out["score"] == pytest.approx(f([text], [gold])[0])
            assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    out = compute_score(
        "x", "7</answer> <confidence>0.8</confidence>", "7", None, method="rlcr", prefill="<answer>"
    )
    assert out["score"] == pytest.approx(0.96) and out["acc"] == 1.0
    with pytest.raises(ValueError):
        compute_score("x", "y", "7", {"method": "nope"})


def test_verl_rows_shape() -> None:
    rows = verl_rows([{"question": "1 + 1 =", "gold": "2", "id": "a"}], elicitation="prefill")
    r = rows[0]
    assert r["reward_model"]["ground_truth"] == "2"
    assert r["prompt"][-1]["role"] == "user" and "1 + 1 =" in r["prompt"][-1]["content"]
    assert r["extra_info"]["prefill"] == "<answer>"


def _verl_call(row: dict, response: str, **reward_kwargs: object) -> dict[str, float]:
    """compute_score called as verl's reward manager calls it for one row of the dataset."""
    return compute_score(
        row["data_source"],
        response,
        row["reward_model"]["ground_truth"],
        row["extra_info"],
        **reward_kwargs,
    )


def test_verl_configured_method_is_the_one_trained() -> None:
    # Rows built with the README recipe (no method) and reward_kwargs.method=rlvr score RLVR:
    # a right answer at q = 0.8 earns 1.0, not RLCR's 1 - 0.2² = 0.96.
    (row,) = verl_rows([{"question": "3 + 4 =", "gold": "7"}])
    assert "method" not in row["extra_info"]
    assert _verl_call(row, resp(RIGHT, "0.8"), method="rlvr")["score"] == 1.0
    assert _verl_call(row, resp(RIGHT, "0.8"))["score"] == pytest.approx(0.96)  # default rlcr
    # a row that repeats the configured method is fine
    (same,) = verl_rows([{"question": "3 + 4 =", "gold": "7"}], method="rlvr")
    assert _verl_call(same, resp(RIGHT, "0.8"), method="rlvr")["score"] == 1.0


def test_verl_row_method_conflicting_with_config_is_an_error() -> None:
    (row,) = verl_rows([{"question": "3 + 4 =", "gold": "7"}], method="rlcr")
    with pytest.raises(ValueError, match=r"method='rlcr'.*method='rlvr'"):
        _verl_call(row, resp(RIGHT, "0.8"), method="rlvr")
    # with nothing configured the default (rlcr) is the run's method: a row saying rlvr conflicts
    (rlvr_row,) = verl_rows([{"question": "3 + 4 =", "gold": "7"}], method="rlvr")
    with pytest.raises(ValueError, match=r"method='rlvr'.*method='rlcr' \(the default"):
        _verl_call(rlvr_row, resp(RIGHT, "0.8"))
    with pytest.raises(ValueError, match="format_weight=0.5.*format_weight=0.1"):
        compute_score("x", resp(RIGHT, "0.8"), "7", {"format_weight": 0.5}, format_weight=0.1)
    with pytest.raises(ValueError, match="unknown calbench reward 'RLVR'"):
        verl_rows([{"question": "3 + 4 =", "gold": "7"}], method="RLVR")


def test_verl_row_without_method_after_parquet_uses_config() -> None:
    # A dataset where only some rows name a method stores None for the others (parquet unifies
    # the struct); None means "not stated", so those rows follow reward_kwargs.
    from datasets import Dataset

    items = [{"question": "3 + 4 =", "gold": "7"}]
    rows = verl_rows(items, method="rlvr") + verl_rows(items)
    loaded = list(Dataset.from_list(rows))
    assert loaded[1]["extra_info"]["method"] is None
    for row in loaded:
        assert _verl_call(row, resp(RIGHT, "0.8"), method="rlvr")["score"] == 1.0
