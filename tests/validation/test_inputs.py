"""validation/inputs.py's load_arrays: the one reader of data files, whole or memory-mapped."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.errors import InputError
from mdeploy.validation.inputs import load_arrays


def test_npy_is_read_whole_by_default_and_memory_mapped_on_request(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.save(tmp_path / "x.npy", data)

    whole = load_arrays(tmp_path / "x.npy")[""]
    mapped = load_arrays(tmp_path / "x.npy", mmap=True)[""]

    assert not isinstance(whole, np.memmap) and whole.flags.writeable
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable  # the user's file can never be written
    np.testing.assert_array_equal(mapped, data)


def test_a_folder_of_npy_is_keyed_by_file_name_and_mapped_too(tmp_path):
    np.save(tmp_path / "input_ids.npy", np.ones((2, 8), dtype=np.int64))
    np.save(tmp_path / "mask.npy", np.zeros((2, 8), dtype=np.int64))

    arrays = load_arrays(tmp_path, mmap=True)

    assert sorted(arrays) == ["input_ids", "mask"]
    assert all(isinstance(a, np.memmap) for a in arrays.values())


def test_npz_is_read_whole_even_when_mapping_is_asked(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2), dtype=np.float32), labels=np.array([0, 1, 2]))

    arrays = load_arrays(tmp_path / "d.npz", mmap=True)

    assert sorted(arrays) == ["labels", "x"] and not isinstance(arrays["x"], np.memmap)


@pytest.mark.parametrize("mmap", [False, True])
def test_bad_files_are_input_errors_either_way(tmp_path, mmap):
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    (tmp_path / "empty").mkdir()

    with pytest.raises(InputError, match="cannot read data file"):
        load_arrays(tmp_path / "bad.npy", mmap=mmap)
    with pytest.raises(InputError, match="no .npy files"):
        load_arrays(tmp_path / "empty", mmap=mmap)
    with pytest.raises(InputError, match="data not found"):
        load_arrays(tmp_path / "missing.npy", mmap=mmap)
