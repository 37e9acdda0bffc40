"""The quantize passes, one module per format (onnx_quantize: CPU and TensorRT targets; tflite_quantize), with what
they share: calibration data (calibration.py), ONNX graph preparation (onnx_prepare.py) and TensorRT's Q/DQ rules
(tensorrt_rules.py). Pruning lives in mdeploy/pruning, distillation in mdeploy/training.

The passes are still registered in the `mdeploy.passes` entry-point group: a third party's pass declared there keeps
working, and a pass need not quantize (base.py: `verb` says which verb it serves).
"""
