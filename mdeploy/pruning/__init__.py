"""Pruning a PyTorch module so that the deployed model is really smaller and faster (`mdeploy prune`).

- structured.py: Torch-Pruning's DepGraph removes whole channels, neurons and heads with everything that depends
  on them; the only kind of pruning a dense runtime (onnxruntime) turns into speed.
- masks.py: unstructured and 2:4 masks with torch.nn.utils.prune, made permanent (smaller once compressed, never
  faster on a dense runtime; the report says so and shows the latency).
- the `--save-weights` file (state_dict + pruning history, rebuilt without pickle) is a format the loader reads:
  it lives in mdeploy/frameworks/pruning_record.py, and this package writes it through that module.
- methods.py: which --method does what (structured or masks), Taylor importance's loss, why a .pt2 cannot be pruned.
- examples.py: the example inputs the dependency graph is traced with, and the training data read from --data.
- measure.py: parameters, MACs and channel counts before and after (latency: mdeploy/measuring).
- recover.py: BatchNorm recalibration and distillation from the unpruned model (mdeploy.training's loop).

Everything here works on torch modules in-process; the verb (mdeploy/verbs/prune.py) passes only paths and numpy
arrays to the rest of mdeploy.
"""
