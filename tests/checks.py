"""The one way tests check a refusal ("one clean error"): the contract every verb keeps for bad input, written once.

A refusal is exit 2 and a stderr of one `error:` line, optionally followed by one `hint:` line: no traceback, no C++
signature or framework source path, no onnxruntime status prefix (what a raw exception would carry). When the test
names them, the output path does not exist afterwards (nor a `.NAME.*` staging sibling), the folder it wrote into is
empty, and stdout is empty."""

from __future__ import annotations

import re
from pathlib import Path

CXX_SIGNATURE = re.compile(r"\w::\w")
SOURCE_PATH = re.compile(r"\.(?:cc|cpp|cxx|h|hpp|cu)(?::\d+|\b)")


def assert_clean_stderr(stderr: str, *contains: str, hint: bool = False) -> str:
    """stderr is one `error:` line and at most one `hint:` line (exactly one when `hint`), holding each of `contains`,
    with nothing a raw exception would leak. Returns the error line. For callers that only have the stderr text."""
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), stderr
    assert len(lines) == 1 or lines[1].startswith("hint: "), stderr
    assert not hint or len(lines) == 2, f"no hint: line\n{stderr}"
    assert "Traceback" not in stderr and "[ONNXRuntimeError]" not in stderr, stderr
    assert not CXX_SIGNATURE.search(stderr) and not SOURCE_PATH.search(stderr), stderr
    for text in contains:
        assert text in stderr, (text, stderr)
    return lines[0]


def assert_clean_error(result, *contains: str, hint: bool = False, out: Path | None = None,
                       folder: Path | None = None, no_stdout: bool = False) -> str:
    """`result` (a CliResult) is a refusal: exit 2 and a clean stderr (see `assert_clean_stderr`). `out`: the output
    path, which must not exist, nor any staging `.NAME.*` next to it. `folder`: a folder that must be empty afterwards.
    `no_stdout`: nothing was printed to stdout. Returns the error line."""
    assert result.code == 2, (result.code, result.stdout[-2000:], result.stderr[-3000:])
    line = assert_clean_stderr(result.stderr, *contains, hint=hint)
    if no_stdout:
        assert result.stdout == "", result.stdout
    if out is not None:
        assert not out.exists(), f"{out} was written"
        assert not list(out.parent.glob(f".{out.name}.*")), "a staging file or folder was left"
    if folder is not None:
        assert [p.name for p in folder.iterdir()] == [], "nothing may be left behind"
    return line


def without_module(tmp_path: Path, module: str) -> dict[str, str]:
    """The environment for a CLI run in which `module` cannot be imported, as if its extra were not installed: a
    sitecustomize.py on PYTHONPATH puts an import hook first that refuses it and its submodules."""
    hook = tmp_path / "hide" / "sitecustomize.py"
    hook.parent.mkdir()
    hook.write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r} or name.startswith({module!r} + '.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    return {"PYTHONPATH": str(hook.parent)}
