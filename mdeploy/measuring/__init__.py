"""Measuring what a model costs: latency (latency.py) and memory (memory.py), below the verbs that report them.

benchmark, convert, prune and distill all measure through here, so that a figure means the same in each report.
"""
