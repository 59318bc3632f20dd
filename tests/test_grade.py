"""Math equivalence and the final-number fallback used to grade GSM-style answers."""

import pytest

from calbench.core.grade import exact_match, gsm8k_gold, letter_match, math_equal


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        ("12.0", "12", True),  # the RLCR evaluator marked this wrong (gold not parsed)
        ("12", "12.0", True),
        ("$1,250", "1250", True),
        ("1,250 dollars", "1250", True),
        ("4 - 1 = 3", "3", True),  # whole equation: the final number counts
        ("The answer is 7.", "7", True),
        ("12/5", "2.4", True),  # math-verify proves it
        ("\\frac{1}{2}", "0.5", True),
        ("\\boxed{72}", "72", True),
        ("-5", "-5", True),
        ("8", "9", False),
        ("3 or 4", "3", False),  # the final number is 4
        ("", "3", False),
        (None, "3", False),
        ("no idea", "3", False),
    ],
)
def test_math_equal(pred, gold, ok):
    assert math_equal(pred, gold) is ok


def test_gsm8k_gold():
    assert gsm8k_gold("Janet sells ... <<9*2=18>>18\n#### 1,018") == "1018"


def test_exact_and_letter():
    assert exact_match("The Eiffel Tower!", "eiffel tower")
    assert exact_match("Paris", "London|Paris")
    assert not exact_match("Lyon", "Paris")
    assert letter_match("(B) Paris", "B") and letter_match("b", "B")
    assert letter_match("Option C", "C") and not letter_match("A", "C")
