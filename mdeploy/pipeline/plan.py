"""The resolved plan of a pipeline file: what `mdeploy run` will do, before it does anything.

`spec.load(path)` turns a pipeline file into a Plan (every option checked against the verb's options type, every
value with where it came from); `execute.run(plan, ...)` carries it out; `--dry-run` prints it. Only plain values
live here (paths, strings, numbers), so a plan can be printed as JSON and hashed for the step cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


@dataclass(frozen=True)
class Gate:
    """`metric op bar`, e.g. `accuracy-drop <= 0.01`; evaluated per model against the baseline (the first artifact)."""

    text: str  # as written in the file
    metric: str  # accuracy-drop | accuracy | cosine | top1 | max-abs | latency-ratio | size-ratio | p50-ms | p99-ms | ...
    op: str  # "<=" or ">="
    bar: float
    where: str  # "pipeline.yaml:18:5 gates[0]"


@dataclass
class PlannedStep:
    """One verb run for one model: its options as the verb's Options fields, and where each value came from."""

    index: int  # position in `steps:`
    verb: str  # convert | quantize | validate | benchmark | package
    options: dict[str, Any]  # Options field name -> value, ready for `verbs.<verb>.Options(**options)`
    sources: dict[str, str]  # Options field name -> "pipeline.yaml:12:7 steps[1].quantize.mode" | "default" | "model cnn" | "plan"
    output: Path | None  # the artifact this step writes: a model, a package folder (None for validate / benchmark)
    report: Path  # where this step's own report (JSON) is written
    where: str  # "pipeline.yaml:12:5 steps[1]"

    @property
    def name(self) -> str:
        return f"{self.index + 1:02d}-{self.verb}"


@dataclass
class PlannedModel:
    name: str
    source: str  # as written: a path or FILE.py:FACTORY, resolved relative to the pipeline file's folder
    steps: list[PlannedStep] = field(default_factory=list)
    folder: Path = Path()  # RUN_DIR/<model name>


@dataclass
class Plan:
    pipeline: Path
    run_dir: Path
    data: dict[str, Path]  # `data:` names -> resolved paths
    models: list[PlannedModel]
    gates: list[Gate]
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (paths as strings): the dry-run output and the manifest's `plan`."""
        return _plain(asdict(self))

    def folder_of(self, model: PlannedModel) -> Path:
        """The model's folder in the run folder (a hand-made plan may leave `folder` unset)."""
        return model.folder if str(model.folder) not in ("", ".") else self.run_dir / model.name

    def model(self, name: str) -> PlannedModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
