"""`--shapes` parsing and profile derivation: plain Python over the ONNX model's declared input shapes."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.core import TensorSpec
from mdeploy.errors import InputError
from mdeploy.converters.tensorrt_profiles import derive_profiles, parse_shapes

IMAGES = TensorSpec("images", ("batch", 3, 224, 224))
TOKENS = TensorSpec("tokens", ("batch", "seq"), "int64")
FIXED = TensorSpec("bias", (4,))


def test_shapes_parse_into_min_opt_max():
    parsed = parse_shapes(["images:1x3x224x224:8x3x224x224:32x3x224x224", "serving:0:1x4:2x4:2x4"])
    assert parsed["images"] == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert parsed["serving:0"] == ((1, 4), (2, 4), (2, 4))  # a name with a colon keeps it


@pytest.mark.parametrize(("text", "says"), [
    ("images:1x3:8x3", "--shapes 'images:1x3:8x3': not NAME:MIN:OPT:MAX"),
    ("images:1x3:8xa:9x3", "cannot read the shape '8xa'"),
    ("images:0x3:8x3:9x3", "dim below 1"),
    ("images:1x3:8x3:9x3x1", "different ranks"),
    ("images:4x3:2x3:9x3", r"MIN <= OPT <= MAX does not hold \(axis 0: 4, 2, 9\)"),
])
def test_bad_shapes_are_input_errors(text, says):
    with pytest.raises(InputError, match=says) as err:
        parse_shapes([text])
    assert "e.g. --shapes images:1x3x224x224:8x3x224x224:32x3x224x224" in err.value.hint  # no model: a generic example


def test_bad_shapes_hint_at_the_named_input_of_the_model():
    """With the model's inputs known, the example is the named input's own range, its fixed dims kept."""
    for text in ("tokens:1:4:8", "tokens:1x8:4x8", "tokens:4x8:1x8:8x8", "tokens:ax8:4x8:8x8"):
        with pytest.raises(InputError, match=f"--shapes '{text}'") as err:
            derive_profiles([TOKENS, FIXED], shapes=[text])
        assert err.value.hint.endswith("e.g. --shapes tokens:1x1:8x8:32x32"), err.value.hint


def test_shapes_fill_dynamic_axes_and_fixed_inputs_keep_their_shape():
    profiles = derive_profiles([TOKENS, FIXED], shapes=["tokens:1x8:4x64:16x128"])
    tokens, bias = profiles
    assert (tokens.min, tokens.opt, tokens.max, tokens.source, tokens.dynamic) == ((1, 8), (4, 64), (16, 128), "--shapes", True)
    assert (bias.min, bias.max, bias.source, bias.dynamic) == ((4,), (4,), "model", False)
    assert tokens.text() == "tokens min 1x8 opt 4x64 max 16x128 (--shapes)"


def test_input_gives_one_fixed_shape():
    (tokens, _) = derive_profiles([TOKENS, FIXED], inputs=[TensorSpec("tokens", (2, 32), "int64")])
    assert (tokens.min, tokens.opt, tokens.max, tokens.source) == ((2, 32), (2, 32), (2, 32), "--input")


def test_a_dynamic_input_without_a_range_is_named_never_a_silent_1():
    with pytest.raises(InputError, match=r"input tokens\[batch, seq\] has dynamic axis 0, 1") as err:
        derive_profiles([TOKENS, FIXED])
    assert "--shapes tokens:1x1:8x8:32x32" in err.value.hint


def test_dynamic_keeps_an_axis_that_then_needs_a_range():
    with pytest.raises(InputError, match="axis 0 of images dynamic, which needs a range"):
        derive_profiles([IMAGES], inputs=[TensorSpec("images", (1, 3, 224, 224))], dynamic=[("images", 0, "batch")])
    with pytest.raises(InputError, match="dynamic axis 0"):  # a fixed model axis kept dynamic by --dynamic
        derive_profiles([TensorSpec("x", (1, 16))], dynamic=[("x", 0, "batch")])
    assert derive_profiles([IMAGES], shapes=["images:1x3x224x224:2x3x224x224:4x3x224x224"],
                           dynamic=[("images", 0, "batch")])[0].max == (4, 3, 224, 224)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"shapes": ["pixels:1x3:1x3:1x3"]}, "--shapes names pixels, which is not an input"),
    ({"shapes": ["images:1x3x224:1x3x224:1x3x224"]}, r"MIN 1x3x224 has 3 dims, but input images\[batch, 3, 224, 224\] has 4"),
    ({"shapes": ["images:1x1x224x224:1x3x224x224:1x3x224x224"]}, "MIN 1x1x224x224 has 1 on axis 1, where input images.* fixes 3"),
    ({"inputs": [TensorSpec("images", (1, 3, 112, 224))]}, "--input images:1x3x112x224: the shape 1x3x112x224 has 112 on axis 2"),
    ({"inputs": [TensorSpec("images", ("n", 3, 224, 224))]}, "needs every dim as a number"),
    ({"shapes": ["images:1x3x224x224:1x3x224x224:1x3x224x224"], "inputs": [TensorSpec("images", (1, 3, 224, 224))]},
     "both a --shapes range and an --input shape"),
    ({"dynamic": [("images", 7, "d")]}, "images has 4 axes"),
])
def test_shapes_that_do_not_fit_the_model(kwargs, says):
    with pytest.raises(InputError, match=says):
        derive_profiles([IMAGES], **kwargs)


def test_validation_stays_inside_the_profile():
    from mdeploy.converters.tensorrt_profiles import validation_specs
    from mdeploy.validation.run import resized_feed

    mask = TensorSpec("mask", ("batch", "seq"), "int64")
    specs = [TOKENS, mask, FIXED]
    profiles = derive_profiles(specs, shapes=["tokens:1x8:4x64:16x128", "mask:1x8:4x64:16x128"])
    shaped, dynamic = validation_specs(specs, profiles)
    assert [s.shape for s in shaped] == [(4, 64), (4, 64), (4,)]  # OPT, whose second size is inside the range too
    assert dynamic == {"batch": [("tokens", 0), ("mask", 0)], "seq": [("tokens", 1), ("mask", 1)]}
    # OPT at MAX on the batch: the first size moves down so that n+2 fits; a range too narrow is validated once
    profiles = derive_profiles([IMAGES], shapes=["images:1x3x224x224:8x3x224x224:8x3x224x224"])
    shaped, dynamic = validation_specs([IMAGES], profiles)
    assert shaped[0].shape == (1, 3, 224, 224) and dynamic == {"batch": [("images", 0)]}
    feed = {"images": np.zeros(shaped[0].shape, np.float32)}
    resized, _ = resized_feed(shaped, dynamic, feed, np.random.default_rng(0))
    assert resized["images"].shape == (3, 3, 224, 224)
    narrow = derive_profiles([IMAGES], shapes=["images:1x3x224x224:2x3x224x224:2x3x224x224"])
    assert validation_specs([IMAGES], narrow) == ([TensorSpec("images", (2, 3, 224, 224))], {})
