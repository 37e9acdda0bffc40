"""Pruning a PyTorch module so that the deployed model is really smaller and faster (`mdeploy prune`).

- structured.py: Torch-Pruning's DepGraph removes whole channels, neurons and heads with everything that depends
  on them; the only kind of pruning a dense runtime (onnxruntime) turns into speed.
- masks.py: unstructured and 2:4 masks with torch.nn.utils.prune, made permanent (smaller once compressed, never
  faster on a dense runtime; the report says so and shows the latency).
- history.py: `--save-weights` files that rebuild the pruned module without pickle (state_dict + pruning history).
- measure.py: parameters, MACs, channel counts, and onnxruntime latency of two models measured side by side.
- recover.py: BatchNorm recalibration and distillation from the unpruned model (mdeploy.training's loop).

Everything here works on torch modules in-process; the verb (mdeploy/verbs/prune.py) passes only paths and numpy
arrays to the rest of mdeploy.
"""
