"""What a run leaves beside its models: RUN_DIR/manifest.json (input hashes, versions, the resolved plan, each step's
outcome as it finishes, so an interrupted run still says what it did) and the run's report (RunReport)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

from mdeploy.pipeline.cache import tool_fingerprint, versions, write_atomic
from mdeploy.pipeline.plan import Plan, PlannedModel
from mdeploy.reports.report import Report, Step


class RunReport(Report):
    """The report of `mdeploy run`: passed when every model passed (every gate held, no step failed or errored)."""

    @property
    def passed(self) -> bool:
        models = self.data.get("models") or []
        return bool(models) and all(m["passed"] for m in models) and all(s.status not in ("failed", "error") for s in self.steps)


def run_report(plan: Plan, models: list[PlannedModel], results: dict[str, dict[str, Any]], inputs: dict[str, str],
            job: str | None, interrupted: bool = False) -> RunReport:
    entries = [results[m.name] for m in models if m.name in results]
    steps = [Step(f"{e['name']}: {r['name']}", r["status"],
                  {k: v for k, v in (("verb", r["verb"]), ("report", r["report"]), ("error", r["error"]),
                                     ("cached", r["cached"] or None)) if v is not None}, r["seconds"])
             for e in entries for r in e["steps"]]
    notes = [f"{e['name']}: {r['name']} {r['status']}: {r['error']}" for e in entries for r in e["steps"] if r["error"]]
    notes += [f"{e['name']}: gate {g['gate']} failed: {g['reason']}" for e in entries for g in e["gates"] if not g["passed"]]
    missing = [m.name for m in models if m.name not in results]
    if interrupted:
        notes.insert(0, "interrupted (Ctrl-C or SIGTERM): the finished steps are kept; run again to go on from there")
    if missing:
        notes.append("not run: " + ", ".join(missing))
    data = {
        "pipeline": {"path": str(plan.pipeline), "sha256": inputs.get(str(plan.pipeline))},
        "run_dir": str(plan.run_dir),
        "job": job,
        **({"interrupted": True} if interrupted else {}),
        "models": entries,
        "inputs_sha256": inputs,
        "versions": versions(),  # every installed framework (a parallel run's parent imports none of them)
    }
    return RunReport(command="run", steps=steps, data=data, notes=notes)


class Manifest:
    """RUN_DIR/manifest.json: input hashes, versions, the resolved plan, and each step's outcome as it finishes."""

    def __init__(self, plan: Plan, models: list[PlannedModel], inputs: dict[str, str], *, job: str | None, jobs: int,
                 force: bool, started: datetime) -> None:
        self.path = plan.run_dir / ("manifest.json" if job is None else f"manifest-{job}.json")
        self.lock = threading.RLock()  # parallel runs: a thread receives the workers' step records
        self.data: dict[str, Any] = {
            "manifest_version": 1,
            "status": "running",
            "started": started.isoformat(timespec="seconds"),
            "finished": None,
            "pipeline": {"path": str(plan.pipeline), "sha256": inputs.get(str(plan.pipeline))},
            "run_dir": str(plan.run_dir),
            "job": job,
            "jobs": jobs,
            "force": force,
            "inputs_sha256": inputs,
            "versions": versions(),
            "mdeploy_source_sha256": tool_fingerprint(),
            "plan": plan.to_dict(),
            "models": {m.name: {"passed": None, "steps": []} for m in models},
        }

    def write(self) -> None:
        with self.lock:
            write_atomic(self.path, json.dumps(self.data, indent=2, default=str))

    def step(self, model: str, record: dict[str, Any]) -> None:
        with self.lock:
            steps = self.data["models"][model]["steps"]
            if record not in steps:
                steps.append(record)
            self.write()

    def model(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.data["models"][entry["name"]] = {"passed": entry["passed"], "steps": entry["steps"], "gates": entry["gates"]}
            self.write()

    def finish(self, report: RunReport, status: str) -> None:
        with self.lock:
            finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.data.update(status=status, passed=report.passed, finished=finished)
            self.write()


__all__ = ["Manifest", "RunReport", "run_report"]
