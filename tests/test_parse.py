"""The parser contract of calbench/parse.py, case by case."""

import math

import pytest

from calbench.core.parse import (
    extract_answer,
    has_format,
    parse_answer_details,
    parse_confidence,
    parse_confidence_details,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>42</answer>", "42"),
        ("<ANSWER> 42 </Answer>", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # the LAST tag wins
        ("<answer>  </answer>", None),  # empty -> None, no fallback to lines
        ("<answer>\n 7 \n</answer>", "7"),
        ("blah\nAnswer: 12\nmore", "12"),
        ("Answer: 1\nFinal answer: 2", "2"),  # last matching line
        ("final ANSWER: x = 3", "x = 3"),
        ("Answer: 5\n<answer>6</answer>", "6"),  # a tag beats lines
        ("<answer>unclosed", None),
        ("The answer is 5.", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answer_details_record_provenance():
    d = parse_answer_details("Answer: 9")
    assert (d.answer, d.source) == ("9", "line")
    assert parse_answer_details("<answer>9</answer>").source == "tag"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("0.85", 0.85),
        (".25", 0.25),
        ("1e-1", 0.1),
        ("1.0000", 1.0),
        ("0", 0.0),
        ("1", 1.0),
        ("85%", 0.85),
        ("85 %", 0.85),
        ("100%", 1.0),
        ("0.9.", 0.9),  # one trailing period removed
        ("\u00a00.6\u2009", 0.6),  # Unicode spaces stripped
        ("about 0.7", 0.7),  # exactly one number inside text
        ("I'd say 80% sure", 0.8),
        ("high", None),
        ("0.7-0.8", None),  # a range: two numbers
        ("between 0.6 and 0.8", None),
        ("0,8", None),  # decimal comma: two numbers
        ("nan", None),
        ("inf", None),
        ("-0.5", None),
        ("150%", None),
        ("101", None),
        ("", None),
    ],
)
def test_confidence_content(content, expected):
    got = parse_confidence(f"<answer>1</answer><confidence>{content}</confidence>")
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_bare_value_over_one_is_a_flagged_percentage():
    d = parse_confidence_details("<confidence>85</confidence>")
    assert d.value == pytest.approx(0.85) and d.rescaled
    d = parse_confidence_details("<confidence>0.85</confidence>")
    assert not d.rescaled
    d = parse_confidence_details("<confidence>85%</confidence>")
    assert d.value == pytest.approx(0.85) and not d.rescaled  # explicit % is not "rescaled"


def test_last_tag_wins_even_if_unparseable():
    assert parse_confidence("<confidence>0.9</confidence> <confidence>high</confidence>") is None
    d = parse_confidence_details("<confidence>0.9</confidence><confidence>high</confidence>")
    assert d.raw == "high" and d.error


def test_final_unclosed_confidence_tag_counts_when_it_holds_a_number():
    # two-stage prefills <confidence>; the model stops after the number, or a stop sequence
    # cuts the closing tag
    d = parse_confidence_details("<confidence>0.5")
    assert (d.value, d.source) == (0.5, "tag_unclosed")
    assert parse_confidence("<confidence>0.4</confidence> ... <confidence>0.9") == 0.9
    assert parse_confidence("<confidence>85%</confid") == pytest.approx(0.85)  # cut mid-tag
    # prose after an unclosed tag is not a number: the complete tag (or nothing) stands
    assert parse_confidence("<confidence>0.4</confidence> <confidence>0.9 because") == 0.4
    d = parse_confidence_details("<confidence>I think 0.9")
    assert d.value is None and d.error == "missing"
    # what a token limit leaves of "0.8" is not 0: the complete tag (or nothing) stands
    assert parse_confidence("<confidence>0.8</confidence> <confidence>0") == 0.8
    assert parse_confidence("<confidence>0.") is None
    assert parse_confidence("<confidence>1") == 1.0


def test_line_fallback():
    assert parse_confidence("Answer: 3\nConfidence: 0.6") == 0.6
    assert parse_confidence("Confidence level: 70%") == pytest.approx(0.7)
    assert parse_confidence("confidence: 0.2\nCONFIDENCE: 0.3") == 0.3
    assert parse_confidence_details("Confidence: 0.6").source == "line"
    # a tag anywhere beats lines
    assert parse_confidence("<confidence>0.1</confidence>\nConfidence: 0.6") == 0.1


def test_no_confidence_anywhere():
    assert parse_confidence("I think it's 5.") is None
    assert parse_confidence(None) is None


def test_results_are_never_nan():
    for text in [
        "<confidence>nan</confidence>",
        "<confidence>NaN%</confidence>",
        "<confidence>1e400</confidence>",
    ]:
        v = parse_confidence(text)
        assert v is None or math.isfinite(v)


def test_has_format():
    assert has_format("<answer>1</answer><confidence>0.5</confidence>")
    assert not has_format("<answer>1</answer>")


def test_prefilled_answer_runs_to_the_end_of_the_response():
    from calbench.eval.harness import grade_doc

    doc = {"gold": "E", "grader": "letter", "prefill": "<answer>", "question": "q"}
    g = grade_doc(doc, "<answer>E")
    assert g["correct"] and g["answer"] == "E"
    assert g["parse"]["answer_source"] == "prefill_unclosed"
    # the unclosed answer stops at a confidence tag, which is read too
    g = grade_doc(doc, "<answer>E <confidence>0.7")
    assert (g["answer"], g["confidence"]) == ("E", 0.7)
    assert grade_doc({**doc, "prefill": ""}, "<answer>E")["answer"] is None  # contract holds


@pytest.mark.parametrize(
    "text, expected, source",
    [
        ("<answer>a<answer>b</answer>", "b", "tag"),  # the opening tag nearest the close
        ("7</answer><confidence>0.8</confidence>", "7", "tag_unopened"),
        ("<answer>1</answer> 2</answer>", "1", "tag"),  # a stray close is ignored
    ],
)
def test_answer_tag_pairing(text, expected, source):
    d = parse_answer_details(text)
    assert (d.answer, d.source) == (expected, source)


def test_parsing_is_linear_on_hostile_responses():
    # 200 KB of unclosed tags took 15-22 s per response with the old regexes
    import time

    for chunk in ("<answer>", "<confidence>", "<answer><confidence>1", "9" * 7 + "x "):
        text = chunk * (200_000 // len(chunk))
        t = time.perf_counter()
        parse_answer_details(text, unclosed_ok=True)
        parse_answer_details(text)
        parse_confidence_details(text)
        assert time.perf_counter() - t < 1.0, chunk  # linear: ~10 ms here; quadratic: > 10 s
