"""The --max-error bar: parsing, and how it judges measured numbers (no models needed)."""

from __future__ import annotations

import pytest

from mdeploy.errors import InputError
from mdeploy.validation.accuracy import parse_bar


def test_bar_parses_several_criteria():
    bar = parse_bar("cosine>=0.995, top1>=0.99,accuracy-drop<=0.01")
    assert [str(c) for c in bar.criteria] == ["cosine>=0.995", "top1>=0.99", "accuracy-drop<=0.01"]
    assert bar.needs_labels
    tol = bar.tolerance()
    assert tol.min_cosine == 0.995 and tol.min_top1 == 0.99


@pytest.mark.parametrize("spec", ["cosine", "cosine>0.9", "cosine<=0.9", "loss<=1", "top1>=x", ",", "cosine>=0.9,"])
def test_bad_specs_are_input_errors(spec):
    if spec == "cosine>=0.9,":  # a trailing comma is harmless
        assert len(parse_bar(spec).criteria) == 1
        return
    with pytest.raises(InputError):
        parse_bar(spec)


def test_margin_is_positive_when_met():
    (c,) = parse_bar("accuracy-drop<=0.01").criteria
    assert c.margin(0.005) > 0 > c.margin(0.02)
