"""The verbs: one module each, one options type (`Options`) and one function (`run(options) -> Report`).

The CLI (mdeploy/cli), the Python API (mdeploy.api) and the pipeline runner (`mdeploy run`) all call these same
functions, so there is one way to run a verb. Heavy frameworks are imported inside the plugins that need them,
never here: `mdeploy --help` builds its flags from these modules.
"""

VERBS = ("convert", "quantize", "validate", "benchmark", "inspect", "prune", "distill", "package")
