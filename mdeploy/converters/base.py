"""What every converter shares: its edge, its options dataclass, and its result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError


@dataclass
class ConversionResult:
    """What one hop produced: the file, and what the validation step needs to know about it."""

    output: ModelRef
    notes: list[str] = field(default_factory=list)
    input_specs: list[TensorSpec] = field(default_factory=list)
    # dim name -> [(input name, axis)], the axes the result must accept at any size
    dynamic_axes: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # A check of the output the converter left to its caller, who runs it before the output is used (convert: once
    # validation's reference run has released the source model, so that the two never hold memory at once).
    pending_check: Callable[[], None] | None = None
    # (feed, outputs) of the source at the example inputs, when the converter ran it there (numpy arrays by name):
    # validation reuses the outputs for an identical feed instead of running the source again (seconds for a BERT)
    source_run: tuple[dict[str, Any], dict[str, Any]] | None = None


class Converter:
    """One edge of the conversion graph. Subclasses set sources/target/Options and implement convert()."""

    sources: ClassVar[tuple[Format, ...]] = ()
    target: ClassVar[Format]
    Options: ClassVar[type] = object
    name: ClassVar[str] = ""

    def convert(self, src: ModelRef, out: Path, options: Any) -> ConversionResult:
        raise NotImplementedError


def chosen_options(given: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the user actually set (None, empty and False mean 'not given')."""
    return {k: v for k, v in given.items() if v not in (None, [], (), False)}


def build_options(chain: list[type[Converter]], given: dict[str, Any]) -> list[Any]:
    """One Options object per hop, filled from the CLI's keyword arguments.

    Arguments left unset fall back to each dataclass's defaults; one that was set but means nothing to
    any hop of the chain is an error rather than silently ignored.
    """
    chosen = chosen_options(given)
    per_hop = [{f.name for f in fields(conv.Options)} for conv in chain]
    unused = sorted(set(chosen) - set().union(*per_hop))
    if unused:
        flags = ", ".join("--" + u.replace("_", "-") for u in unused)
        edges = " -> ".join([chain[0].sources[0].value] + [c.target.value for c in chain]) if chain else ""
        raise InputError(f"{flags} does not apply to the conversion {edges}")
    return [conv.Options(**{k: v for k, v in chosen.items() if k in names}) for conv, names in zip(chain, per_hop)]
