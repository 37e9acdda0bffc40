"""Loading PyTorch models the three ways users hold them, without ever unpickling arbitrary objects.

- `.pt2`: an ExportedProgram (torch.export.save), which carries its own example inputs and dynamic dims.
- `.pt` / `.ts`: a TorchScript archive (torch.jit.save). A `torch.save` pickle is refused: mdeploy never
  loads pickles, and a pickled module cannot be loaded without running arbitrary code.
- `file.py:factory` / `pkg.module:factory`: code that builds the nn.Module; `--weights` is a state_dict
  loaded with `weights_only=True`. The module may define `example_inputs()`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, ModelLoadError, first_line
from mdeploy.frameworks.torch_indices import with_index_ranges
from mdeploy.logs import quiet_loggers


def torch():  # noqa: ANN201 - the module itself
    module = require("torch", extra="torch", purpose="load PyTorch models")
    quiet_loggers()
    return module


@dataclass
class LoadedTorchModel:
    """A callable model with what is known about its inputs.

    `examples` are example tensors keyed by input name, in call order, when the source carries them
    (`.pt2`, `example_inputs()`); `specs` are the input specs (shapes may be symbolic for `.pt2`).
    """

    module: Any  # nn.Module / ScriptModule / the ExportedProgram's module
    input_names: list[str]
    specs: list[TensorSpec]
    examples: dict[str, Any] | None
    exported_program: Any = None
    dynamic_axes: dict[str, list[tuple[str, int]]] | None = None
    by_keyword: bool = False  # nn.Modules from a factory take inputs by name; archives by position

    def call(self, feed: dict[str, Any]) -> Any:
        if self.by_keyword:
            return self.module(**feed)
        return self.module(*[feed[n] for n in self.input_names])


# The model `convert` just built from a factory, handed to the validation that follows in the same process:
# building a BERT-size module again costs seconds and its whole size in memory. Taken by the next load of the
# same ref, dropped by release().
_handed_over: tuple[ModelRef, LoadedTorchModel] | None = None


def hand_over(ref: ModelRef, loaded: LoadedTorchModel) -> None:
    """Keep `loaded` for the next `load(ref)` in this process (once)."""
    global _handed_over
    _handed_over = (ref, loaded)


def release() -> None:
    """Drop a model handed over and never taken (convert without validation)."""
    global _handed_over
    _handed_over = None


def load(ref: ModelRef) -> LoadedTorchModel:
    global _handed_over
    if _handed_over is not None and _handed_over[0] == ref:
        loaded, _handed_over = _handed_over[1], None
        return loaded
    if ref.format == Format.PYTORCH_EXPORTED:
        loaded = _load_exported(ref.path)
    elif ref.format == Format.TORCHSCRIPT:
        loaded = _load_torchscript(ref.path)
    elif ref.format == Format.PYTORCH_MODULE:
        loaded = _load_factory(ref)
    else:
        raise InputError(f"{ref.format.value} is not a PyTorch format")
    loaded.specs = with_index_ranges(loaded.specs, loaded.module)
    return loaded


def _load_exported(path: Path) -> LoadedTorchModel:
    t = torch()
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a torch.export archive (corrupt, truncated or another format)",
                             hint="save programs with torch.export.save(ep, 'model.pt2')")
    try:
        ep = t.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the exported program {path}: {first_line(exc)}",
                             hint="the file may be corrupt, or written by an incompatible torch version") from None
    names = list(ep.graph_signature.user_inputs)
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs, dynamic = [], {}
    for name in names:
        val = placeholders[name].meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise ModelLoadError(f"input '{name}' of {path} is not a tensor; only tensor inputs are supported")
        shape = []
        for axis, dim in enumerate(val.shape):
            if isinstance(dim, int):
                shape.append(dim)
            else:
                dim_name = "batch" if axis == 0 else str(dim)
                shape.append(dim_name)
                dynamic.setdefault(dim_name, []).append((name, axis))
        specs.append(TensorSpec(name, tuple(shape), _np_dtype(val.dtype)))
    examples = None
    if ep.example_inputs is not None:
        args, kwargs = ep.example_inputs
        flat = list(args) + list(kwargs.values())
        if len(flat) == len(names) and all(isinstance(x, t.Tensor) for x in flat):
            examples = dict(zip(names, flat))
    # inputs exported as keyword arguments must be passed by keyword again
    try:
        keywords = list(ep.call_spec.in_spec.children_specs[1].context or [])
    except (AttributeError, IndexError):
        keywords = []
    by_keyword = bool(keywords) and set(keywords) == set(names)
    return LoadedTorchModel(ep.module(), names, specs, examples, exported_program=ep, dynamic_axes=dynamic, by_keyword=by_keyword)


def _load_torchscript(path: Path) -> LoadedTorchModel:
    t = torch()
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a TorchScript archive (corrupt, truncated, or a legacy pickle)",
            hint="save with torch.jit.save(torch.jit.script(model), 'model.pt'), or use FILE.py:FACTORY --weights state_dict.pt",
        )
    with zipfile.ZipFile(path) as archive:
        entries = archive.namelist()
    if not any("/code/" in e for e in entries):
        raise ModelLoadError(
            f"{path} is a pickled PyTorch file (torch.save), not a TorchScript archive; mdeploy does not load pickles",
            hint="if it is a state_dict, give the code that builds the model: FILE.py:FACTORY --weights "
            f"{path.name}; otherwise save with torch.jit.save or torch.export.save",
        )
    try:
        module = t.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelLoadError(f"cannot load TorchScript archive {path}: {first_line(exc)}") from None
    try:
        args = module.forward.schema.arguments[1:]
        names = [a.name for a in args]
    except Exception:
        names = []
    return LoadedTorchModel(module, names, [], None)


def _import_factory(ref: ModelRef) -> Any:
    target, attr = ref.factory.rsplit(":", 1)  # type: ignore[union-attr]
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            mod_name = f"mdeploy_user_{path.stem}_{abs(hash(str(path)))}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            sys.path.insert(0, str(path.parent))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.parent))
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(target)
    except Exception as exc:
        raise InputError(f"cannot import {target}: {type(exc).__name__}: {first_line(exc)}",
                         hint="the factory spec is FILE.py:FACTORY or package.module:FACTORY") from None
    if not hasattr(module, attr):
        raise InputError(f"{target} has no attribute '{attr}'",
                         hint="callables there: " + ", ".join(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")))
    return module, getattr(module, attr)


def _load_factory(ref: ModelRef) -> LoadedTorchModel:
    t = torch()
    module, factory = _import_factory(ref)
    if not callable(factory):
        raise InputError(f"{ref.factory} is not callable")
    try:
        model = factory()
    except Exception as exc:
        raise InputError(f"{ref.factory} failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, t.nn.Module):
        raise InputError(f"{ref.factory} returned {type(model).__name__}, not a torch.nn.Module",
                         hint="the factory must build and return the nn.Module")
    if ref.weights is not None:
        _load_weights(model, ref.weights)
    model.eval()
    names = _forward_arg_names(model)
    examples = None
    if hasattr(module, "example_inputs"):
        try:
            given = module.example_inputs()
        except Exception as exc:
            raise InputError(f"example_inputs() in {ref.factory.split(':')[0]} failed: {first_line(exc)}") from None
        if isinstance(given, t.Tensor):
            given = (given,)
        if isinstance(given, dict):
            examples = dict(given)
        elif isinstance(given, (tuple, list)):
            examples = dict(zip(names, given))
        else:
            raise InputError("example_inputs() must return a tensor, a tuple of tensors or a dict of tensors")
        if not all(isinstance(v, t.Tensor) for v in examples.values()):
            raise InputError("example_inputs() must return tensors only")
        names = list(examples)
    specs = [TensorSpec(n, tuple(v.shape), _np_dtype(v.dtype)) for n, v in (examples or {}).items()]
    return LoadedTorchModel(model, names, specs, examples, by_keyword=True)


def _load_weights(model: Any, weights: Path) -> None:
    t = torch()
    try:
        state = t.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load weights {weights} safely: {first_line(exc)}",
            hint="--weights must be a state_dict saved with torch.save(model.state_dict(), path); pickled objects are refused",
        ) from None
    if isinstance(state, dict) and "mdeploy_pruning" in state:
        # written by `mdeploy prune --save-weights`: the factory's module loses the channels pruning removed
        # (Torch-Pruning's history, replayed) before the pruned state_dict can fit it (see pruning_record.py)
        from mdeploy.frameworks import pruning_record

        pruning_record.replay(model, state["mdeploy_pruning"])
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{weights} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights {weights} do not fit the model: {first_line(exc)}") from None


def _forward_arg_names(model: Any) -> list[str]:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _np_dtype(torch_dtype: Any) -> str:
    return str(torch_dtype).replace("torch.", "")


def to_torch(feed: dict[str, np.ndarray], device: str = "cpu") -> dict[str, Any]:
    t = torch()
    return {k: t.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feed.items()}


def flatten_outputs(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Name every tensor in a (possibly nested) output, in torch.onnx's flattening order.

    A single tensor is `output`; dict (and HF ModelOutput) entries keep their keys; namedtuples their
    field names; tuple and list items are `output_0`, `output_1`, ... (`key.0` when nested).
    """
    t = torch()
    if obj is None:
        return []
    if isinstance(obj, t.Tensor):
        return [(prefix or "output", obj)]
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        items = [(f, getattr(obj, f)) for f in obj._fields]
    elif isinstance(obj, (tuple, list)):
        items = [(str(i) if prefix else f"output_{i}", v) for i, v in enumerate(obj)]
    else:
        raise InputError(f"the model returns a {type(obj).__name__}; only tensors, tuples, lists and dicts of tensors are supported")
    out = []
    for key, value in items:
        out.extend(flatten_outputs(value, f"{prefix}.{key}" if prefix else str(key)))
    return out



def export_pt2(module: Any, example: tuple[Any, ...], path: Path, dynamic_batch: bool = True, what: str = "the model",
               hint: str = "write it as .onnx") -> None:
    """torch.export `module` on the positional `example` tensors (axis 0 dynamic unless `dynamic_batch` is False) and
    save the ExportedProgram with torch.export.save: the `.pt2` output of the verbs that train or prune a module."""
    t = torch()
    dynamic = tuple({0: t.export.Dim("batch", min=1)} for _ in example) if dynamic_batch else None
    try:
        program = t.export.export(module, tuple(example), dynamic_shapes=dynamic)
        t.export.save(program, str(path))
    except Exception as exc:
        raise ConversionError(f"torch.export failed on {what}: {first_line(exc)}", hint=hint) from None
