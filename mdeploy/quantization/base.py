"""What every optimization pass shares: which verb it serves, which formats it reads, its options, its result.

A pass is registered in the `mdeploy.passes` entry-point group. The verb (`quantize`, `prune`, ...) finds the
pass for the source format with `registry.pass_for(verb, fmt)`, fills its Options dataclass from the CLI's
keyword arguments with `build_pass_options`, runs it into an atomic output, then validates the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.converters.base import chosen_options
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError


@dataclass
class PassResult:
    output: ModelRef
    notes: list[str] = field(default_factory=list)
    input_specs: list[TensorSpec] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Pass:
    verb: ClassVar[str] = ""  # "quantize", "prune", ...
    sources: ClassVar[tuple[Format, ...]] = ()
    target: ClassVar[Format]
    Options: ClassVar[type] = object
    name: ClassVar[str] = ""

    def run(self, src: ModelRef, out: Path, options: Any) -> PassResult:
        raise NotImplementedError


def build_pass_options(pass_cls: type[Pass], given: dict[str, Any]) -> Any:
    """The pass's Options from the keyword arguments the user set; a flag it does not take is an error."""
    chosen = chosen_options(given)
    names = {f.name for f in fields(pass_cls.Options)}
    unused = sorted(set(chosen) - names)
    if unused:
        flags = ", ".join("--" + u.replace("_", "-") for u in unused)
        raise InputError(f"{flags} does not apply to {pass_cls.verb} of {', '.join(f.value for f in pass_cls.sources)} models")
    return pass_cls.Options(**chosen)
