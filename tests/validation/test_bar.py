"""The --max-error bar: parsing, and how it judges measured numbers (no models needed)."""

from __future__ import annotations

import pytest

from mdeploy.errors import InputError
from mdeploy.validation.bar import parse_bar


def test_bar_parses_several_criteria():
    bar = parse_bar("cosine>=0.995, top1>=0.99,accuracy-drop<=0.01")
    assert [str(c) for c in bar.criteria] == ["cosine>=0.995", "top1>=0.99", "accuracy-drop<=0.01"]
    assert bar.needs_labels
    tol = bar.tolerance()
    assert tol.min_cosine == 0.995 and tol.min_top1 == 0.99


@pytest.mark.parametrize(("spec", "says", "hint"), [
    ("cosine", "cannot parse --max-error 'cosine'", "METRIC>=VALUE"),
    ("cosine>0.9", "cannot parse --max-error 'cosine>0.9'", "METRIC>=VALUE"),
    ("top1>=x", "cannot parse --max-error 'top1>=x'", "METRIC>=VALUE"),
    (",", "cannot parse --max-error ','", "METRIC>=VALUE"),
    ("cosine<=0.9", "--max-error cosine takes >=, not <=", "cosine>="),
    ("cosine>=1.5", "--max-error cosine>=1.5 can never be met: cosine is at most 1", "cosine>=0.99"),
    ("top1>=1.01", "--max-error top1>=1.01 can never be met: top1 is at most 1", "top1>=0.99"),
    ("loss<=1", "unknown metric 'loss' in --max-error 'loss<=1'", "metrics: cosine, top1, accuracy, accuracy-drop, max-abs"),
])
def test_bad_specs_are_input_errors_that_say_what_is_wrong(spec, says, hint):
    with pytest.raises(InputError) as caught:
        parse_bar(spec)
    assert str(caught.value) == says
    assert hint in caught.value.hint


def test_a_trailing_comma_is_harmless():
    assert [str(c) for c in parse_bar("cosine>=0.9,").criteria] == ["cosine>=0.9"]


def test_margin_is_positive_when_met():
    (c,) = parse_bar("accuracy-drop<=0.01").criteria
    assert c.margin(0.005) > 0 > c.margin(0.02)


def test_a_speedup_term_is_judged_on_the_measured_speed_and_only_where_speed_is_measured():
    bar = parse_bar("cosine>=0.99,speedup>=1.2", allow_speed=True)
    assert [str(c) for c in bar.accuracy_criteria] == ["cosine>=0.99"]
    assert bar.judge_speed(1.5).met and bar.judge_speed(1.5).missed == []
    slow = bar.judge_speed(0.8)
    assert not slow.met and slow.missed == ["speedup 0.8 (bar speedup>=1.2)"]
    assert parse_bar("cosine>=0.99", allow_speed=True).judge_speed(0.5).met  # no speed term: nothing to miss
    with pytest.raises(InputError, match="only quantize measures the speed-up"):
        parse_bar("speedup>=1.2")  # prune and distill
