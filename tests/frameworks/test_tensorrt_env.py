"""The engine's JSON sidecar: written beside it as a companion output, and checked against the machine before the
runner deserializes anything (no TensorRT or GPU needed for the check itself)."""

from __future__ import annotations

import json

import pytest

from mdeploy.errors import ModelLoadError, OutputExistsError
from mdeploy.frameworks import tensorrt_env
from mdeploy.outputs import atomic_output, companions, size_of

A100 = {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
A30 = {"name": "NVIDIA A30", "compute_capability": "8.0"}
H200 = {"name": "NVIDIA H200", "compute_capability": "9.0"}
T4 = {"name": "Tesla T4", "compute_capability": "7.5"}


def sidecar(version="10.13.0.35", gpu=A100, **flags):
    return {"tensorrt_version": version, "gpu": gpu, "flags": {"version_compatible": False, "hardware_compatibility": "none",
                                                                **flags}}


def test_the_same_version_and_gpu_pass():
    assert tensorrt_env.check_sidecar("m.engine", sidecar(), "10.13.0.35", A100) == []


def test_another_tensorrt_version_is_one_clear_line():
    with pytest.raises(ModelLoadError) as err:
        tensorrt_env.check_sidecar("m.engine", sidecar(), "10.14.1.48", A100)
    assert str(err.value) == ("m.engine was built with TensorRT 10.13.0.35 and this is TensorRT 10.14.1.48: an engine runs "
                              "only with the TensorRT version that built it")
    assert "--version-compatible" in err.value.hint


def test_a_version_compatible_engine_runs_on_later_versions_only():
    built = sidecar(version_compatible=True)
    for later in ("10.14.1.48", "11.0.0.1"):  # TensorRT 11 runs version-compatible 10.x engines
        assert tensorrt_env.check_sidecar("m.engine", built, later, A100) == []
    with pytest.raises(ModelLoadError, match=r"runs with TensorRT 10.13.0.35 or later only"):
        tensorrt_env.check_sidecar("m.engine", built, "10.12.0.36", A100)


def test_another_gpu_generation_is_one_clear_line():
    with pytest.raises(ModelLoadError) as err:
        tensorrt_env.check_sidecar("m.engine", sidecar(), "10.13.0.35", H200)
    assert "built for NVIDIA A100-SXM4-80GB (compute capability 8.0) and this is NVIDIA H200 (compute capability 9.0)" \
        in str(err.value)
    assert "--hardware-compatibility ampere+" in err.value.hint
    with pytest.raises(ModelLoadError, match="compute capability it was built for"):
        tensorrt_env.check_sidecar("m.engine", sidecar(hardware_compatibility="same-cc"), "10.13.0.35", H200)


def test_same_compute_capability_on_another_gpu_is_a_note():
    notes = tensorrt_env.check_sidecar("m.engine", sidecar(), "10.13.0.35", A30)
    assert len(notes) == 1 and "same compute capability" in notes[0]
    assert tensorrt_env.check_sidecar("m.engine", sidecar(hardware_compatibility="same-cc"), "10.13.0.35", A30) == []


def test_ampere_plus_runs_on_newer_gpus_but_not_older_ones():
    built = sidecar(hardware_compatibility="ampere+")
    assert tensorrt_env.check_sidecar("m.engine", built, "10.13.0.35", H200) == []
    with pytest.raises(ModelLoadError, match=r"built for Ampere and newer GPUs .* this is Tesla T4 \(compute capability 7.5\)"):
        tensorrt_env.check_sidecar("m.engine", built, "10.13.0.35", T4)


def test_sidecars_that_cannot_be_read(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    assert tensorrt_env.read_sidecar(engine) is None  # an engine from another tool: nothing to check
    (tmp_path / "m.engine.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="m.engine.json is not a readable sidecar"):
        tensorrt_env.read_sidecar(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelLoadError, match="not an mdeploy TensorRT sidecar"):
        tensorrt_env.read_sidecar(engine)
    tensorrt_env.write_sidecar(engine, sidecar())
    assert tensorrt_env.read_sidecar(engine)["gpu"] == A100


@pytest.mark.parametrize("suffix", [".engine", ".plan"])
def test_the_sidecar_is_a_companion_output_moved_with_the_engine(tmp_path, suffix):
    target = tmp_path / f"m{suffix}"
    with atomic_output(target, force=False) as staged:
        staged.write_bytes(b"x" * 100)
        tensorrt_env.write_sidecar(staged, sidecar())
        assert companions(staged) == [f"m{suffix}.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}", f"m{suffix}.json"]
    assert size_of(target) == 100 + (tmp_path / f"m{suffix}.json").stat().st_size
    (tmp_path / f"m{suffix}").unlink()
    with pytest.raises(OutputExistsError, match=f"m{suffix}.json"):  # an old sidecar is replaced only with --force
        with atomic_output(target, force=False) as staged:
            staged.write_bytes(b"y")
            tensorrt_env.write_sidecar(staged, sidecar(version="10.14.1.48"))
    assert not target.exists() and json.loads((tmp_path / f"m{suffix}.json").read_text())["tensorrt_version"] == "10.13.0.35"


def test_inspect_reads_the_sidecar_without_tensorrt(cli, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    tensorrt_env.write_sidecar(engine, {**sidecar(), "profiles": [{"name": "x", "min": [1, 16], "opt": [8, 16],
                                                                   "max": [32, 16], "source": "--shapes"}]})
    result = cli("inspect", engine, "--json")
    assert result.code == 0, result.stderr
    model = json.loads(result.stdout)["model"]
    assert (model["format"], model["gpu"], model["profiles"][0]["opt"]) == ("tensorrt", A100, [8, 16])
    shown = cli("inspect", engine)
    assert shown.code == 0 and str(engine) in shown.stdout and "10.13.0.35" in shown.stdout
