"""`mdeploy run PIPELINE.yaml`: steps (the verbs) for each model, gates against the baseline, one report.

chain.py is the artifact chain, one row per step verb: what it reads and writes, its suffix, what it compares.
Planning: spec.py reads and checks the file (yaml_file.py: positions and suggestions; schema.py: the keys, each step
verb's options, the JSON Schema) and steps.py resolves each step's options into a Plan (plan.py).
Running: execute.py runs a plan into a run folder; model_run.py runs one model's steps, with the step cache
(cache.py, step_key.py, sources.py for code sources); workers.py runs models in parallel; manifest.py writes the
manifest and the run's report; gates.py evaluates the gates. The CLI is mdeploy/cli/run.py.
"""
