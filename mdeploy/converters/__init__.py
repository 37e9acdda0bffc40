"""Converters: one module per edge, named <src>_to_<dst>.py, each a `Converter` with an Options dataclass."""
