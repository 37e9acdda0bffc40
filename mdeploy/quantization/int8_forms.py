"""The INT8 forms `quantize --goal latency` tries (quantization/goal.py), and which of them this CPU rules out.

A form is what onnxruntime.quantization is asked for: static or dynamic, QDQ or QOperator, per-channel or
per-tensor weights, u8 or s8 activations, 7- or 8-bit weights, and nodes kept in float.

The candidate list is pruned by what the CPU has (`forms`), because some forms cannot win there:
- 7-bit weights (reduce_range) exist for x86 CPUs without VNNI, whose u8*s8 multiply-add (vpmaddubsw) saturates
  16-bit sums; VNNI and AMX accumulate in 32 bits and ARM has no such path, so there 7 bits only lose accuracy.
  Without VNNI static u8*s8 kernels saturate with 8-bit weights, so static forms use 7 bits there; dynamic forms
  (whose activations are re-scaled per run) try both.
- s8 activations: x86 without VNNI has no s8*s8 kernel (onnxruntime shifts them to u8 at run time, slower), so they
  are tried only where s8 kernels exist (VNNI, AMX, ARM's dot product).
- static forms need calibration data; without it only dynamic forms are tried (random calibration is not a proof).
Options the user fixed (--mode, --per-channel/--per-tensor, --reduce-range/--full-range, --activation-type) are
kept in every candidate; the others are searched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mdeploy import machine


@dataclass(frozen=True)
class Form:
    """One INT8 form: what onnxruntime.quantization is asked for."""

    mode: str
    quant_format: str = "qdq"
    per_channel: bool = True
    activation_type: str = "uint8"
    reduce_range: bool = False
    exclude: tuple[str, ...] = ()
    preprocess: bool = True  # mdeploy's constant folding and shape inference first (--no-preprocess: off)

    @property
    def name(self) -> str:
        parts = [self.mode]
        if self.mode == "static":
            parts += [self.quant_format, "u8" if self.activation_type == "uint8" else "s8"]
        parts.append("per-channel" if self.per_channel else "per-tensor")
        if self.reduce_range:
            parts.append("7-bit")
        if self.exclude:
            parts.append(f"{len(self.exclude)} slow nodes float")
        if not self.preprocess:
            parts.append("no pre-processing")
        return " ".join(parts)

    def changes(self, user_exclude: list[str]) -> dict[str, Any]:
        """The quantize pass's options for this form (OnnxQuantizeOptions fields)."""
        changes: dict[str, Any] = {
            "mode": self.mode,
            "per_channel": "on" if self.per_channel else "off",
            "reduce_range": "on" if self.reduce_range else "off",
            "exclude": [*user_exclude, *(n for n in self.exclude if n not in user_exclude)],
        }
        if self.mode == "static":
            changes.update(quant_format=self.quant_format, activation_type=self.activation_type)
        if not self.preprocess:
            changes["skip_preprocess"] = True
        return changes

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "per_channel": self.per_channel, "reduce_range": self.reduce_range}
        if self.mode == "static":
            d.update(format=self.quant_format, activation_type=self.activation_type)
        if self.exclude:
            d["kept_in_float"] = list(self.exclude)
        if not self.preprocess:
            d["preprocess"] = False
        return d


def form_of(details: dict[str, Any]) -> Form:
    """The form the quantize pass reports it wrote (its result's details)."""
    if details.get("mode") == "dynamic":
        return Form("dynamic", per_channel=bool(details.get("per_channel")), reduce_range=bool(details.get("reduce_range")))
    return Form("static", details.get("format", "qdq"), bool(details.get("per_channel")),
                details.get("activation_type", "uint8"), bool(details.get("reduce_range")))


def cpu_isa() -> dict[str, bool]:
    """What decides which INT8 kernels are fast here (machine.int8_isa says what each implies)."""
    return {"arm": machine.is_arm(), "vnni": machine.has_vnni(), "amx": "amx_int8" in machine.cpu_flags()}


def forms(options: Any, has_data: bool, isa: dict[str, bool]) -> tuple[list[Form], list[str]]:
    """The candidate forms for this CPU in the order worth trying, and a line per kind of form pruned and why."""
    pruned: list[str] = []
    wide = isa["vnni"] or isa["amx"] or isa["arm"]
    modes = [options.mode] if options.mode != "auto" else ["static", "dynamic"]
    if "static" in modes and not has_data:
        modes.remove("static")
        pruned.append("static forms: no calibration data (give --calib-data to try them)")
    pcs = [options.per_channel == "on"] if options.per_channel != "auto" else [True, False]
    if options.activation_type != "auto":
        acts = [options.activation_type]
    elif isa["arm"]:
        acts = ["int8", "uint8"]
    elif wide:
        acts = ["uint8", "int8"]
    else:
        acts = ["uint8"]
        pruned.append("s8 activations: this x86 CPU has no VNNI, so no s8*s8 kernel (onnxruntime shifts them to u8)")
    if options.reduce_range != "auto":
        rr_static = rr_dynamic = [options.reduce_range == "on"]
    elif wide:
        rr_static = rr_dynamic = [False]
        pruned.append("7-bit weights: VNNI/AMX/ARM products do not saturate, so 7 bits would only lose accuracy")
    else:
        rr_static, rr_dynamic = [True], [True, False]
        pruned.append("8-bit static weights: u8*s8 products saturate without VNNI (static forms use 7 bits)")
    bases: list[Form] = []
    first: list[Form] = []  # variations measured to matter most, tried before the others
    variations: list[Form] = []
    for mode in modes:
        if mode == "static":
            base = Form("static", "qdq", pcs[0], acts[0], rr_static[0])
            variations += [replace(base, quant_format="qoperator")]
            variations += [replace(base, per_channel=pc) for pc in pcs[1:]]
            variations += [replace(base, activation_type=a) for a in acts[1:]]
            variations += [replace(base, reduce_range=rr) for rr in rr_static[1:]]
        else:
            base = Form("dynamic", per_channel=False if len(pcs) > 1 else pcs[0], reduce_range=rr_dynamic[0])
            # the raw graph: onnxruntime's fusions then find the patterns they know (BERT-base: 0.27x vs 0.32x of
            # float with mdeploy's pre-processing, benchmarks/quantize_goal.py); --no-preprocess already is that form
            first += [replace(base, preprocess=False)] if not options.skip_preprocess else []
            variations += [replace(base, per_channel=True)] if len(pcs) > 1 else []
            variations += [replace(base, reduce_range=rr) for rr in rr_dynamic[1:]]
        bases.append(base)
    return bases + first + variations, pruned
