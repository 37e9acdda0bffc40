"""Inference backends: one module per framework, each a small subclass of `Runner`."""
