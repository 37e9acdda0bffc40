"""`mdeploy run PIPELINE.yaml`: steps (the verbs) for each model, gates against the baseline, one report.

spec.py reads and checks the file into a Plan (plan.py); execute.py runs it into a run folder with a step cache;
gates.py evaluates the gates. The CLI is mdeploy/cli/run.py.
"""
