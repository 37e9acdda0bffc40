"""Loading models of each framework from a ModelRef; used by that framework's runner and converters.

Each module here imports its framework lazily (through mdeploy.deps), inside its functions.
"""
