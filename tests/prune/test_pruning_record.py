"""The pruning record inside a `--save-weights` file, read back through `FILE.py:FACTORY --weights W.pt`: a record
edited by hand (a dtype torch lacks, an absurd shape, fields of the wrong type) is exit 2, "not a pruning record
this mdeploy writes", before anything uses it; the weights file is never changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fixtures import prune_data
from mdeploy.errors import ModelLoadError
from mdeploy.frameworks import pruning_record
from tests.checks import assert_clean_error


def _record(weights: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the whole saved dict, its record as plain JSON)."""
    import torch

    saved = torch.load(weights, weights_only=True)
    return saved, json.loads(bytes(saved[pruning_record.KEY].numpy().tobytes()).decode())


def _blob(record: Any) -> Any:
    import torch

    return torch.frombuffer(bytearray(json.dumps(record).encode()), dtype=torch.uint8).clone()


def _edited(weights: Path, out: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a real pruned weights file whose record `edit` changed, saved as torch.save saves any dict."""
    import torch

    saved, record = _record(weights)
    edit(record)
    torch.save({**saved, pruning_record.KEY: _blob(record)}, out)
    return out


def _set_input(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(record: dict[str, Any]) -> None:
        record["inputs"][0][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set_input("dtype", "complex999"), "inputs[0].dtype is 'complex999', not one of float32"),
        (_set_input("shape", [1 << 20, 1 << 20, 64]), "inputs[0].shape [1048576, 1048576, 64] has"),
    ],
    ids=["unknown dtype", "absurd shape"],
)
def test_prune_with_an_edited_record_is_exit_2_and_writes_nothing(cli, digits_unrecovered, tmp_path, edit, words):
    weights = _edited(digits_unrecovered[2], tmp_path / "w.pt", edit)
    before = weights.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    result = cli("prune", prune_data.FACTORY, "--weights", weights, "-o", out / "p.onnx", "--sparsity", "0.3")
    error = assert_clean_error(result, hint=True, folder=out)
    lines = [error, result.stderr.strip().splitlines()[1]]
    assert lines[0].startswith("error: the pruning record (mdeploy_pruning) in the --weights file is not a pruning "
                               "record this mdeploy writes: " + words), lines[0]
    assert lines[1] == "hint: write it again with `mdeploy prune ... --save-weights OUT.pt`"
    assert weights.read_bytes() == before


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda record: record.pop(key)


def _put(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    *path, value = path_and_value

    def edit(record: dict[str, Any]) -> None:
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_put("version", 2), "version 2"),
        (_put("library", "nni"), "library 'nni'"),
        (_drop("history"), "history is None, not a list"),
        (_put("history", "all"), "history is 'all', not a list"),
        (_put("history", 0, ["conv1", True]), "history[0] is"),
        (_put("history", 0, 1, "yes"), "history[0] is"),
        (_put("history", 0, 2, 0, -1), "history[0] is"),
        (_put("history", 0, 2, 0, 1.5), "history[0] is"),
        (_put("history", 0, 0, 7), "history[0] is"),
        (_put("inputs", {"image": [1, 1, 8, 8]}), "inputs is"),
        (_put("inputs", 0, "x"), "inputs[0] is 'x'"),
        (_put("inputs", 0, "name", None), "inputs[0] is"),
        (_put("inputs", 0, "dtype", "Tensor"), "inputs[0].dtype is 'Tensor'"),
        (_put("inputs", 0, "dtype", ["float32"]), "inputs[0].dtype is ['float32']"),
        (_put("inputs", 0, "shape", [1, -8, 8]), "inputs[0].shape is [1, -8, 8]"),
        (_put("inputs", 0, "shape", [1, "8", 8]), "inputs[0].shape is"),
        (_put("inputs", 0, "shape", [1] * 9), "inputs[0].shape is [1, 1, 1, 1, 1, 1, … (9 items)], not a list of at most 8"),
        (_put("inputs", 0, "shape", 64), "inputs[0].shape is 64"),
        (_put("inputs", 0, "shape", [10**30]), "inputs[0].shape is"),
        (_put("heads", []), "heads is [], not an object"),
        (_put("heads", "attn", {"attr": "__class__", "heads": 0}), "heads['attn'] is"),
        (_put("heads", "attn", {"attr": "a.b", "heads": 2}), "heads['attn'] is"),
        (_put("heads", "attn", {"attr": "num_heads", "heads": "2"}), "heads['attn'] is"),
    ],
)
def test_every_field_of_the_record_is_checked_before_use(digits_unrecovered, edit, words):
    _, record = _record(digits_unrecovered[2])
    assert pruning_record.decode(_blob(record)) == record  # the record as mdeploy writes it reads back
    edit(record)
    with pytest.raises(ModelLoadError) as raised:
        pruning_record.decode(_blob(record))
    assert raised.value.message.startswith(
        "the pruning record (mdeploy_pruning) in the --weights file is not a pruning record this mdeploy writes: " + words
    ), raised.value.message
    assert len(raised.value.message) < 300


@pytest.mark.parametrize("record", [[1, 2], "history", None, 5])
def test_a_record_that_is_not_an_object_is_refused(record):
    with pytest.raises(ModelLoadError, match="not a pruning record this mdeploy writes: a JSON object was expected"):
        pruning_record.decode(_blob(record))
