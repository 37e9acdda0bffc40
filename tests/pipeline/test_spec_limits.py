"""Pipeline files that would cost time or memory to read ("billion laughs", deep nesting, binary files) are exit 2 at
once, with `file:line:col`, however the value is placed.

Each case runs `mdeploy run` in its own process, under an address-space cap (so the old behaviour, a value repr'd
with every alias expanded, dies there instead of taking the machine) and a timeout; its peak RSS is read from
wait4, the child's own figure. (The 2 s target is start-up plus reading: measured by hand, not timed here.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdeploy.errors import shown
from tests.checks import assert_clean_stderr

PEAK_RSS_MB = 100
_CAP = 2 << 30  # bytes of address space: far above what reading a small file needs, far below what expanding it takes


def _laughs(anchor_indent: str, levels: int = 9, width: int = 9) -> str:
    """A YAML list of `levels` anchored lists, each holding `width` aliases of the one before: width**levels leaves."""
    lines = [f"{anchor_indent}- &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"{anchor_indent}- &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines)


def _pipelines(folder: Path) -> dict[str, tuple[Path, int]]:
    """The four placements the issue names, each with the line where the expansion is refused."""
    (folder / "m.onnx").write_bytes(b"\x08\x07")  # the source must exist; it is never read
    head = "models:\n  - source: m.onnx\n"
    cases = {
        "version": f"version:\n{_laughs('  ')}\n{head}steps: [convert]\n",
        "step option": f"version: 1\n{head}steps:\n  - convert:\n      opset:\n{_laughs('        ')}\n",
        "dynamic": f"version: 1\nmodels:\n  - source: m.onnx\n    dynamic:\n{_laughs('      ')}\nsteps: [convert]\n",
        "inputs": f"version: 1\nmodels:\n  - source: m.onnx\n    inputs:\n      x:\n{_laughs('        ')}\nsteps: [convert]\n",
    }
    out = {}
    for name, text in cases.items():
        path = folder / (name.replace(" ", "_") + ".yaml")
        path.write_text(text)
        out[name] = (path, text.count("\n"))
    return out


# Runs mdeploy capped in address space and time, and prints its peak RSS (KiB) from wait4. It is this small process
# that starts mdeploy: a child forked from the test process itself would carry the test's own pages into its peak.
_LAUNCHER = """
import os, resource, subprocess, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
proc = subprocess.Popen([sys.executable, "-m", "mdeploy", *sys.argv[1:]], stdout=subprocess.DEVNULL)
deadline = time.monotonic() + {timeout}
while not (done := os.wait4(proc.pid, os.WNOHANG))[0]:
    if time.monotonic() > deadline:
        proc.kill()
    time.sleep(0.02)
print(done[2].ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(done[1]))
"""


def _run_capped(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in MB) of `mdeploy ARGS`, capped in address space and time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER.format(cap=_CAP, timeout=timeout), *args], cwd=cwd,
                          check=False, capture_output=True, text=True, timeout=timeout + 60)
    return proc.returncode, proc.stderr, time.perf_counter() - start, int(proc.stdout.split()[-1]) / 1024


@pytest.fixture(scope="module")
def laughs(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    return _pipelines(tmp_path_factory.mktemp("laughs"))


@pytest.mark.parametrize("placement", ["version", "step option", "dynamic", "inputs"])
def test_a_billion_laughs_pipeline_is_exit_2_at_once_in_little_memory(laughs, placement):
    path, _ = laughs[placement]
    code, stderr, seconds, peak_mb = _run_capped(["run", path.name], path.parent)
    assert code == 2, (seconds, stderr[-2000:])
    error = assert_clean_stderr(stderr, hint=True)
    assert re.match(rf"error: {re.escape(path.name)}:\d+:\d+: expands to more than [\d,]+ nodes", error), error
    assert peak_mb < PEAK_RSS_MB, f"{placement}: peak RSS {peak_mb:.0f} MB"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: &a [*a]\n", "contains itself"),
        ("version: " + "[" * 200 + "]" * 200 + "\n", "nested more than 64 levels"),
        ("a: &a x\nversion: [" + ", ".join(["*a"] * 1001) + "]\n", "more than 1,000 aliases"),
        ("models:\n" + "".join(f"  - &a{i} {'[' * 50}{f'*a{i - 1}' if i else 1}{']' * 50}\n" for i in range(30))
         + "version: *a29\n", "nested more than 64 levels deep \\(with its aliases expanded\\)"),
    ],
    ids=["self-reference", "deep nesting", "alias count", "deep through aliases"],
)
def test_other_documents_that_would_cost_too_much_are_refused_with_their_place(tmp_path, text, message):
    path = _write(tmp_path, "p.yaml", text)
    code, stderr, _, _ = _run_capped(["run", path.name], tmp_path)
    assert code == 2, stderr[-2000:]
    assert re.match(rf"error: p\.yaml:\d+:\d+: .*{message}", assert_clean_stderr(stderr)), stderr


def test_a_few_aliases_still_work(tmp_path):
    """Aliases are YAML: a pipeline may share a value, and its errors point where the value is used."""
    from mdeploy.errors import InputError
    from mdeploy.pipeline import spec

    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    path = _write(tmp_path, "p.yaml", "version: 1\nmodels:\n  - source: m.onnx\n    dynamic: &d [x:0, x:1]\n"
                                      "steps:\n  - convert: {opset: &o 17}\n  - validate: {atol: *o}\n")
    plan = spec.load(path, out=tmp_path / "run")
    assert plan.models[0].steps[0].options["dynamic"] == ["x:0", "x:1"]
    path.write_text("version: 1\nmodels:\n  - source: m.onnx\nsteps:\n  - convert: {opset: &o [1, 2]}\n"
                    "  - benchmark: {batch: *o}\n")
    with pytest.raises(InputError, match=r"p\.yaml:5:\d+: steps\[0\]\.convert\.opset: expected an integer, got \[1, 2\]"):
        spec.load(path, out=tmp_path / "run")


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("version: '" + "9" * 5000 + "'\nmodels: []\nsteps: []\n", "version: expected 1, got '9999"),
        ("version: 1\nname: " + "n" * 100_000 + "!\nmodels: []\nsteps: []\n", "got 'nnnn"),
        ("version: 1\nmodels:\n  - source: m.onnx\n    dynamic: " + "y" * 100_000 + "\nsteps: [convert]\n", "got 'yyyy"),
        ("version: 1\nmodels:\n  - source: m.onnx\nsteps:\n  - convert: {opset: " + "z" * 100_000 + "}\n", "got 'zzzz"),
        ("version: 1\nmodels:\n  - source: m.onnx\nsteps: [convert]\ngates: ['" + "w" * 100_000 + "']\n", "got 'wwww"),
    ],
    ids=["version", "name", "dynamic", "step option", "gate"],
)
def test_a_long_value_is_cut_short_in_the_message(tmp_path, text, cut):
    from mdeploy.errors import InputError
    from mdeploy.pipeline import spec

    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(InputError) as raised:
        spec.load(_write(tmp_path, "p.yaml", text), out=tmp_path / "run")
    assert cut in raised.value.message and len(raised.value.message) < 400, raised.value.message[:1000]
    assert re.match(r".*p\.yaml:\d+:\d+: ", raised.value.message)


def test_an_integer_too_long_for_python_is_an_error_at_its_place(tmp_path):
    from mdeploy.errors import InputError
    from mdeploy.pipeline import spec

    with pytest.raises(InputError, match=r"p\.yaml:1:10: cannot read this value"):
        spec.load(_write(tmp_path, "p.yaml", "version: " + "9" * 5000 + "\n"), out=tmp_path / "run")


def test_shown_never_prints_a_whole_value():
    shared = ["lol"] * 9
    for _ in range(8):
        shared = [shared] * 9  # 9**9 leaves, as YAML aliases build it: shared references
    assert len(shown(shared)) < 200 and len(shown("x" * 10**6)) < 100 and len(shown(10**5000)) < 40
    assert shown("fast") == "'fast'" and shown([1, 2]) == "[1, 2]" and shown(None) == "None"


@pytest.mark.parametrize("content", [os.urandom(4096), b"\x08\x07\x12\x04main" + bytes(range(256)), "é".encode("latin-1") * 9],
                         ids=["random bytes", "an onnx file", "latin-1 text"])
def test_run_on_a_binary_file_is_one_clear_line(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "mdeploy", "run", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2
    error = assert_clean_stderr(result.stderr, "hint: mdeploy run takes a pipeline .yaml file", hint=True)
    assert error.startswith(f"error: {path} is a binary file, not a pipeline file"), error
    assert "codec" not in result.stderr


def test_a_pipeline_file_over_1_mib_is_refused_before_it_is_read(tmp_path):
    from mdeploy.errors import InputError
    from mdeploy.pipeline import spec

    path = _write(tmp_path, "p.yaml", "version: 1\n" + "# padding\n" * 120_000)
    with pytest.raises(InputError, match=r"p\.yaml is 1\.1 MiB; a pipeline file is YAML of at most 1 MiB"):
        spec.load(path, out=tmp_path / "run")
