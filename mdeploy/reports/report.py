"""The report every verb produces: what ran, what it found, and the versions needed to reproduce it."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mdeploy import __version__

if TYPE_CHECKING:  # annotations only: `mdeploy VERB --help` imports this module
    from mdeploy.validation.compare import Comparison

SCHEMA_VERSION = 1

# import name -> distribution name, for the frameworks a run may have used
_FRAMEWORKS = {
    "numpy": "numpy",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "torch": "torch",
    "onnxscript": "onnxscript",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "tf2onnx": "tf2onnx",
    "ai_edge_litert": "ai-edge-litert",
    "tensorrt": "tensorrt",
    "transformers": "transformers",
    "onnxruntime_genai": "onnxruntime-genai",
}


def environment() -> dict[str, Any]:
    """mdeploy's version and that of every framework this process actually imported."""
    versions = {"mdeploy": __version__, "python": platform.python_version()}
    for module, dist in _FRAMEWORKS.items():
        if module in sys.modules:
            versions[module] = _version(module, dist)
    return {"versions": versions, "platform": platform.platform(), "machine": platform.machine()}


def _version(module: str, dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version  # not at import: `mdeploy VERB --help` loads this module

    for name in (dist, dist + "-cpu", dist + "-gpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return str(getattr(sys.modules[module], "__version__", "unknown"))


@dataclass
class Step:
    """One thing a verb did (a conversion hop, a validation, a benchmark)."""

    name: str
    status: str  # "passed" | "failed" | "done" | "skipped"; in a run also "cached" | "error"
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "status": self.status, **({"details": self.details} if self.details else {})}
        if self.seconds is not None:
            d["seconds"] = round(self.seconds, 4)
        return d


FAILED_STATUSES = ("failed", "error")


@dataclass
class Report:
    """Truthy when every comparison passed and no step failed; a run report (command "run") also needs every model
    and every gate to have passed (data["models"], layout in reports/report.schema.json).

    `comparisons` holds Comparison objects, or their dicts when the report was read back from JSON (a merge);
    `environment` is None for the environment of this process, or the one recorded when the report was made."""

    command: str
    steps: list[Step] = field(default_factory=list)
    comparisons: list[Comparison | dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        if not all(c.get("passed") is True if isinstance(c, dict) else bool(c) for c in self.comparisons):
            return False
        if any(s.status in FAILED_STATUSES for s in self.steps):
            return False
        if self.command == "run":  # a run that ran no model proved nothing
            models = self.data.get("models") or []
            return bool(models) and all(model_passed(m) for m in models)
        return True

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "passed": self.passed,
            **self.data,
            "steps": [s.to_dict() for s in self.steps],
            "comparisons": [c if isinstance(c, dict) else c.to_dict() for c in self.comparisons],
            "notes": self.notes,
            "environment": self.environment if self.environment is not None else environment(),
        }


def model_passed(model: dict[str, Any]) -> bool:
    """One model of a run: it says it passed, every gate held and no step failed or errored."""
    return (
        model.get("passed") is True
        and all(g.get("passed") is True for g in model.get("gates", []))
        and all(s.get("status") not in FAILED_STATUSES for s in model.get("steps", []))
    )
