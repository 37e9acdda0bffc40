"""TensorRT optimization profiles: the MIN/OPT/MAX shape of every input an engine is built for.

Why it exists: an engine accepts, on each dynamic axis, only sizes inside the range its profile gave at build time,
and TensorRT refuses to build a network with a dynamic input that has no profile. Building for a range nobody asked
for (a silent 1) makes an engine that fails later, in production, at the first batch of 2. So every dynamic axis gets
its range from the user: `--shapes NAME:MIN:OPT:MAX` (a range), or `--input NAME:SHAPE` (one fixed shape); an axis
with neither is an error that names it. Everything here is plain Python on the ONNX model's declared shapes: it runs,
and is tested, where TensorRT is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdeploy.core import TensorSpec
from mdeploy.errors import InputError


@dataclass(frozen=True)
class Profile:
    """The shapes one input accepts: every axis between `min` and `max`, tuned for `opt`. `source` says where the
    range came from (`--shapes`, `--input`, or `model` for an input whose shape is fixed in the graph)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    source: str

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    def as_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max), "source": self.source}

    def text(self) -> str:
        def dims(shape: tuple[int, ...]) -> str:
            return "x".join(map(str, shape)) or "scalar"

        if not self.dynamic:
            return f"{self.name} {dims(self.opt)} ({self.source})"
        return f"{self.name} min {dims(self.min)} opt {dims(self.opt)} max {dims(self.max)} ({self.source})"


GENERIC_EXAMPLE = "images:1x3x224x224:8x3x224x224:32x3x224x224"


def _dims(text: str, where: str, example: str) -> tuple[int, ...]:
    """`1x3x224x224` as a tuple of positive ints (an empty text is a scalar)."""
    if text == "":
        return ()
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--shapes '{where}': cannot read the shape '{text}'",
                         hint=f"dims are positive integers joined by x, e.g. --shapes {example}") from None
    if any(d < 1 for d in dims):
        raise InputError(f"--shapes '{where}': the shape '{text}' has a dim below 1",
                         hint=f"every dim is >= 1, e.g. --shapes {example}")
    return dims


def parse_shapes(values: list[str], specs: list[TensorSpec] | None = None,
                 ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """`--shapes NAME:MIN:OPT:MAX` (repeatable) -> {name: (min, opt, max)}; each shape like 1x3x224x224.

    The name is everything before the last three colons, so an input named `images:0` (TensorFlow style) works.
    Per axis MIN <= OPT <= MAX, and all three have the same rank. Every refusal quotes the value as given and hints at
    a value of the right form: for the named input of `specs` (the model's inputs) when it is one, else a generic one.
    """
    by_name = {s.name: s for s in specs or []}

    def example(name: str) -> str:
        spec = by_name.get(name) or (specs[0] if specs and len(specs) == 1 else None)
        return _example(spec) if spec is not None else GENERIC_EXAMPLE

    parsed: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
    for value in values:
        parts = value.rsplit(":", 3)
        if len(parts) != 4 or not parts[0]:
            guess = next((n for n in by_name if value.startswith(n + ":")), "")
            raise InputError(f"--shapes '{value}': not NAME:MIN:OPT:MAX",
                             hint=f"one shape for each of MIN, OPT and MAX, e.g. --shapes {example(guess)}")
        name, *texts = parts
        low, opt, high = (_dims(t, value, example(name)) for t in texts)
        if not len(low) == len(opt) == len(high):
            raise InputError(f"--shapes '{value}': MIN, OPT and MAX have different ranks ({len(low)}, {len(opt)}, {len(high)})",
                             hint=f"each shape has every dim of the input, e.g. --shapes {example(name)}")
        bad = [axis for axis, (a, b, c) in enumerate(zip(low, opt, high)) if not a <= b <= c]
        if bad:
            sizes = "; ".join(f"axis {a}: {low[a]}, {opt[a]}, {high[a]}" for a in bad)
            raise InputError(f"--shapes '{value}': MIN <= OPT <= MAX does not hold ({sizes})",
                             hint=f"each dim grows from MIN to MAX, e.g. --shapes {example(name)}")
        if name in parsed:
            raise InputError(f"--shapes names {name} twice", hint="one MIN:OPT:MAX range per input")
        parsed[name] = (low, opt, high)
    return parsed


def derive_profiles(specs: list[TensorSpec], shapes: list[str] | None = None, inputs: list[TensorSpec] | None = None,
                    dynamic: list[tuple[str, int, str]] | None = None) -> list[Profile]:
    """One profile per model input, from the model's declared shapes and what the user gave.

    - `shapes` (`--shapes`): the range of an input, checked against its rank and its fixed dims;
    - `inputs` (`--input NAME:SHAPE`): one fixed shape (MIN = OPT = MAX) for an input, checked the same way;
    - `dynamic` (`--dynamic NAME:AXIS`): an axis that must stay dynamic, so it needs a range from `--shapes`;
    - a dim fixed in the model keeps its size.
    A dynamic axis with none of these is an InputError naming the input and the axis (never a silent 1).
    """
    by_name = {s.name: s for s in specs}
    ranges = parse_shapes(shapes or [], specs)
    fixed = {s.name: s for s in inputs or []}
    kept_dynamic = {(name, axis) for name, axis, _ in dynamic or []}
    for flag, names in (("--shapes", ranges), ("--input", fixed), ("--dynamic", {n for n, _ in kept_dynamic})):
        unknown = sorted(set(names) - set(by_name))
        if unknown:
            raise InputError(f"{flag} names {', '.join(unknown)}, which is not an input of the model",
                             hint="inputs are: " + ", ".join(f"{s.name}{s.shape_text()}" for s in specs)
                             + (f"; e.g. --shapes {_example(specs[0])}" if flag == "--shapes" and specs else ""))
    both = sorted(set(ranges) & set(fixed))
    if both:
        raise InputError(f"{', '.join(both)} given both a --shapes range and an --input shape", hint="give one of the two")
    profiles = []
    for spec in specs:
        declared = spec.shape
        for name, axis in sorted(kept_dynamic):
            if name == spec.name and not 0 <= axis < len(declared):
                raise InputError(f"--dynamic {name}:{axis}: {name} has {len(declared)} axes {spec.shape_text()}")
        if spec.name in ranges:
            low, opt, high = ranges[spec.name]
            given = next(v for v in shapes or [] if v.rsplit(":", 3)[0] == spec.name)
            for which, shape in (("MIN", low), ("OPT", opt), ("MAX", high)):
                _check_fits(spec, shape, f"--shapes '{given}'", which, f"--shapes {_example(spec)}")
            profiles.append(Profile(spec.name, low, opt, high, "--shapes"))
            continue
        unset = [axis for axis, d in enumerate(declared) if not (isinstance(d, int) and d > 0)]
        wanted = sorted(axis for name, axis in kept_dynamic if name == spec.name)
        if spec.name in fixed:
            given = fixed[spec.name].shape
            if not all(isinstance(d, int) and d > 0 for d in given):
                raise InputError(f"--input {spec.name}{fixed[spec.name].shape_text()}: a TensorRT profile needs every dim "
                                 "as a number", hint=f"give a range with --shapes {_example(spec)}")
            _check_fits(spec, given, f"--input {spec.name}:{_dims_text(given)}", "the shape",
                        f"--input {spec.name}:{_dims_text(tuple(d if isinstance(d, int) and d > 0 else 1 for d in declared))} "
                        f"(one shape) or --shapes {_example(spec)} (a range)")
            if wanted:
                raise InputError(f"--dynamic keeps axis {', '.join(map(str, wanted))} of {spec.name} dynamic, which needs "
                                 "a range", hint=f"give it with --shapes {_example(spec)}")
            shape = tuple(int(d) for d in given)
            profiles.append(Profile(spec.name, shape, shape, shape, "--input"))
            continue
        if unset or wanted:
            axes = sorted(set(unset) | set(wanted))
            raise InputError(
                f"input {spec.name}{spec.shape_text()} has dynamic axis {', '.join(map(str, axes))} and nothing sets its "
                "range for the TensorRT profile",
                hint=f"give --shapes {_example(spec)} (a range) or --input {spec.name}:"
                + "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in declared) + " (one shape)",
            )
        shape = tuple(int(d) for d in declared)
        profiles.append(Profile(spec.name, shape, shape, shape, "model"))
    return profiles


def _check_fits(spec: TensorSpec, shape: tuple, given: str, which: str, example: str) -> None:
    """The user's shape (`which` of the value `given`) has the input's rank and keeps the dims the model fixes."""
    if len(shape) != len(spec.shape):
        raise InputError(f"{given}: {which} {_dims_text(shape)} has {len(shape)} dim{'s' if len(shape) != 1 else ''}, "
                         f"but input {spec.name}{spec.shape_text()} has {len(spec.shape)}",
                         hint=f"give every dim of the input, joined by x: e.g. {example}")
    for axis, (size, declared) in enumerate(zip(shape, spec.shape)):
        if isinstance(declared, int) and declared > 0 and size != declared:
            raise InputError(f"{given}: {which} {_dims_text(shape)} has {size} on axis {axis}, where input "
                             f"{spec.name}{spec.shape_text()} fixes {declared}",
                             hint=f"keep the dims the model fixes: e.g. {example}")


def _dims_text(shape: tuple) -> str:
    return "x".join(str(d) for d in shape) or "(scalar)"


def _example(spec: TensorSpec) -> str:
    """NAME:MIN:OPT:MAX for this input, dynamic dims written as 1 / 8 / 32 for the user to adapt."""
    def shape(size: int) -> str:
        return "x".join(str(d) if isinstance(d, int) and d > 0 else str(size) for d in spec.shape)

    return f"{spec.name}:{shape(1)}:{shape(8)}:{shape(32)}"


def _resized(size: int, axis: int) -> int:
    """The second size convert's validation gives a dynamic axis (validation.run.resized_feed: n+2 on a batch axis;
    elsewhere halved, or +2 when below 4)."""
    return size + 2 if axis == 0 or size < 4 else size // 2


def validation_specs(specs: list[TensorSpec], profiles: list[Profile]) -> tuple[list[TensorSpec],
                                                                                  dict[str, list[tuple[str, int]]]]:
    """Shapes for validating the engine inside its profile: per dynamic dim (inputs sharing a dim name share it), a
    first size, OPT when it can, whose second size (resized_feed's) also lies in every range; a dim with no such
    pair (MIN = MAX, or a range too narrow) is validated at one size only and left out of the dynamic axes."""
    by_name = {p.name: p for p in profiles}
    groups: dict[str, list[tuple[str, int]]] = {}
    for spec in specs:
        p = by_name[spec.name]
        for axis, declared in enumerate(spec.shape):
            if p.min[axis] != p.max[axis]:
                dim = declared if isinstance(declared, str) and declared != "?" else f"{spec.name}:{axis}"
                groups.setdefault(dim, []).append((spec.name, axis))
    shapes = {p.name: list(p.opt) for p in profiles}
    dynamic: dict[str, list[tuple[str, int]]] = {}
    for dim, members in groups.items():
        ranges = [(by_name[n].min[a], by_name[n].max[a]) for n, a in members]
        low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
        first_name, first_axis = members[0]
        opt = min(max(by_name[first_name].opt[first_axis], low), high)
        candidates = [opt, *range(low, min(high, low + 64) + 1), high]
        chosen = next((b for b in candidates if low <= b <= high and low <= _resized(b, first_axis) <= high), None)
        for name, axis in members:
            shapes[name][axis] = chosen if chosen is not None else opt
        if chosen is not None:
            dynamic[dim] = members
    out = [TensorSpec(s.name, tuple(shapes[s.name]), s.dtype, s.value_range) for s in specs]
    return out, dynamic
