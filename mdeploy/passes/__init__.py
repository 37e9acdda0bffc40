"""Optimization passes (quantize, prune, distill, graph optimization): one module per pass and format."""
