"""Grading cases in the real formats (GSM8K, MATH, letters, free text), one reason each, and the
response contract: the evaluator and the trainer's rewards read every response identically."""

from __future__ import annotations

import json

import pytest

from calbench.core.grade import exact_match, grade, letter_match, math_equal
from calbench.core.prompts import ELICITATIONS
from calbench.eval.harness import grade_doc, make_docs
from calbench.train.rewards import REWARDS, score_completions

# (prediction, gold, correct, why)
MATH_CASES = [
    # --- the numeric fallback must not read the last number of an expression
    (r"\frac{1}{3}", r"\frac{14}{3}", False, "1/3 is not 14/3 (old fallback: both end in 3)"),
    ("2", r"\frac{7}{2}", False, "2 is not 7/2 (old fallback: both end in 2)"),
    (r"8\sqrt{2}", r"6\sqrt{2}", False, "different coefficients of sqrt 2"),
    ("-1 + 2i", "1+2i", False, "different real parts"),
    ("2^10", "10", False, "2^10 = 1024, an operand is not a stated value"),
    ("10", "2^10", False, "10 is not 1024"),
    ("3/4", "4", False, "a fraction is not its denominator"),
    ("4", "3/4", False, "a denominator is not the fraction"),
    ("3 - 5", "5", False, "the last number is an operand"),
    ("(3, 5)", "5", False, "a tuple is not its last element"),
    ("3 or 4", "3", False, "the stated value is the last one, 4"),
    ("9", "6+9i", False, "math-verify's plain extraction would read 6+9i as 9"),
    ("1", "x^5 - x^4 + x^3 - x^2 + x - 1", False, "a polynomial is not its constant term"),
    ("29", "(15,-29)", False, "a point is not one coordinate"),
    # --- GSM8K style: plain-number gold, the stated value counts
    ("$1,250", "1250", True, "currency and thousands separator"),
    ("4 - 1 = 3", "3", True, "a whole equation: the value after the last ="),
    ("18 dollars", "18", True, "units after the number"),
    ("The answer is 7.", "7", True, "a sentence ending on the number"),
    ("-5", "-5", True, "negative numbers"),
    ("\u22125", "-5", True, "Unicode minus sign"),
    ("25%", "25", True, "percent sign on a percentage question"),
    ("12.0", "12", True, "decimal form of an integer (the RLCR evaluator marked this wrong)"),
    ("$36", r"\$36", True, "gold written with an escaped dollar"),
    ("x2", "2", False, "a digit glued to a letter is not a value"),
    # --- MATH style: math-verify's verdict on whole expressions
    ("14/3", r"\frac{14}{3}", True, "the same fraction (RLCR evaluator: wrong)"),
    ("3 * sqrt(13)", r"3\sqrt{13}", True, "plain-text sqrt (RLCR evaluator: wrong)"),
    ("pi", r"\pi", True, "plain-text pi (math-verify alone: p times i)"),
    ("2pi", r"2\pi", True, "plain-text pi with a coefficient"),
    ("pi/2", r"\frac{\pi}{2}", True, "plain-text pi in a fraction"),
    ("3.14", r"\pi", False, "an approximation is not the exact value"),
    ("spin", r"\pi", False, "pi inside a word is not pi"),
    ("x = 5", "x=5", True, "spacing (RLCR evaluator: wrong)"),
    ("12/5", "2.4", True, "equal values"),
    (r"\frac{1}{2}", "0.5", True, "equal values"),
    (r"\boxed{72}", "72", True, "boxed answer"),
    ("6 + 9i", "6+9i", True, "complex number, spacing"),
    ("(15, -29)", "(15,-29)", True, "a point, spacing"),
    ("(a + 5)(b + 2)", "(a+5)(b+2)", True, "a factored expression"),
    ("\u221a5", r"\sqrt{5}", True, "Unicode square root"),
    ("(5, \u221e)", r"(5,\infty)", True, "Unicode infinity in an interval"),
    ("", "3", False, "empty answer"),
    (None, "3", False, "no answer"),
    ("no idea", "3", False, "no number at all"),
]


@pytest.mark.parametrize("pred, gold, ok, why", MATH_CASES, ids=[c[3] for c in MATH_CASES])
def test_math_cases(pred, gold, ok, why):
    assert math_equal(pred, gold) is ok, why


LETTER_CASES = [
    ("B", "B", True, "bare letter"),
    ("(B)", "B", True, "parenthesised"),
    ("B) Paris", "B", True, "letter then option text"),
    ("Option C", "C", True, "'Option' prefix"),
    ("answer: d", "D", True, "'answer:' prefix, lower case"),
    ("A", "C", False, "another letter"),
    ("Because", "B", False, "a word starting with the letter is not the letter"),
    ("", "B", False, "empty"),
]


@pytest.mark.parametrize("pred, gold, ok, why", LETTER_CASES, ids=[c[3] for c in LETTER_CASES])
def test_letter_cases(pred, gold, ok, why):
    assert letter_match(pred, gold) is ok, why


TEXT_CASES = [
    ("The Eiffel Tower!", "eiffel tower", True, "articles, case and punctuation ignored"),
    ("Paris", "London|Paris", True, "any alias"),
    ("Lyon", "Paris", False, "another answer"),
    ("Paris, France", "Paris", False, "exact match, not containment"),
]


@pytest.mark.parametrize("pred, gold, ok, why", TEXT_CASES, ids=[c[3] for c in TEXT_CASES])
def test_free_text_cases(pred, gold, ok, why):
    assert exact_match(pred, gold) is ok, why


def test_judge_or_exact_without_a_judge_uses_the_references():
    gold = json.dumps({"correct": ["Paris"], "incorrect": ["Lyon"]})
    assert grade("judge_or_exact", "Paris", gold)[0]
    assert not grade("judge_or_exact", "Lyon", gold)[0]


# --------------------------------------------------------------------------------------------
# The contract: evaluator path == reward path, for every elicitation's prefill and every grader
# --------------------------------------------------------------------------------------------

# generated text (what the model wrote after the prompt, prefill excluded)
GENERATIONS = [
    "<answer>8</answer> <confidence>0.7</confidence>",
    "8</answer> <confidence>0.7</confidence>",
    "8",  # stopped before </answer> under a prefill
    "8 <confidence>0.5",  # and before </confidence>
    "<answer>8</answer><confidence>0.5",  # stop sequence cut the closing tag
    "<answer>9</answer><confidence>85%</confidence>",
    "<answer>8</answer><confidence>high</confidence>",
    "Answer: 8\nConfidence: 0.3",
    "<answer>2^3</answer><confidence>0.9</confidence>",
    "<answer>B) 8</answer><confidence>0.6</confidence>",
    "<answer><answer>8</answer><confidence>0.4</confidence>",
    "",
]
GRADED = [("math", "8"), ("math", "2^3"), ("letter", "B"), ("exact", "8|eight")]


@pytest.mark.parametrize("elicitation", ELICITATIONS)
@pytest.mark.parametrize("grader, gold", GRADED)
def test_evaluator_and_rewards_read_every_response_identically(elicitation, grader, gold):
    docs = make_docs(
        [{"id": "q", "question": "What is 2 cubed?", "gold": gold}],
        elicitation=elicitation,
        grader=grader,
    )["test"]
    doc = dict(docs[0])
    prefill = doc["prefill"]
    for gen in GENERATIONS:
        # the evaluator: lm-eval hands back the generation without gen_prefix; it is put back
        rec = grade_doc(doc, prefill + gen)
        (s,) = score_completions([gen], [gold], grader=grader, prefill=prefill)
        assert (s.answer, s.correct, s.confidence) == (
            rec["answer"],
            rec["correct"],
            rec["confidence"],
        ), (elicitation, gen)
        c = 1.0 if rec["correct"] else 0.0
        assert REWARDS["rlvr"]([gen], [gold], grader=grader, prefill=prefill) == [c]
        q = rec["confidence"]
        want = c - (q - c) ** 2 if q is not None else c - 1.0  # missing q: the worst term
        assert REWARDS["rlcr"]([gen], [gold], grader=grader, prefill=prefill) == [
            pytest.approx(want)
        ]


def test_prefilled_completion_that_stops_early_is_an_answer_for_both():
    # the defect: "8" after a prefilled <answer> was right for the evaluator, unanswered for the
    # reward
    doc = dict(
        make_docs([{"id": "q", "question": "q", "gold": "8"}], elicitation="prefill")["test"][0]
    )
    assert grade_doc(doc, doc["prefill"] + "8")["correct"]
    assert REWARDS["rlvr"](["8"], ["8"], prefill="<answer>") == [1.0]
