"""The accuracy bar (`--max-error cosine>=0.995,accuracy-drop<=0.01`) that quantize, prune and distill hold their
result to, and its verdict on a proof: one parser, one judgement, one `max_error` record for all three verbs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mdeploy.core import Tolerance
from mdeploy.errors import InputError
from mdeploy.reports.report import Step

if TYPE_CHECKING:  # annotations only: `mdeploy VERB --help` imports this module
    from mdeploy.validation.proof import Proof

METRICS = {
    "cosine": ">=",  # worst output's cosine similarity to the float model
    "top1": ">=",  # worst output's top-1 agreement with the float model
    "accuracy": ">=",  # task accuracy against labels
    "accuracy-drop": "<=",  # float accuracy minus quantized accuracy, against labels
    "max-abs": "<=",  # worst absolute error of any output value
    "token-match": ">=",  # language models: share of greedily generated tokens equal to the source's (generation.py)
    "perplexity-ratio": "<=",  # language models: candidate perplexity / source perplexity on a text
    "speedup": ">=",  # float latency / int8 latency, measured side by side (quantize only)
}
# terms judged on the measured speed, not on the proof: the accuracy repair never chases them
SPEED_METRICS = ("speedup",)
AT_MOST_ONE = ("cosine", "top1", "accuracy", "token-match")  # shares and similarities: a bar above 1 is never met
_SPEC = re.compile(r"^\s*(?P<metric>[a-z0-9-]+)\s*(?P<op>>=|<=)\s*(?P<value>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Criterion:
    metric: str
    op: str
    value: float

    def margin(self, measured: float) -> float:
        """Positive when met: how far inside the bar the measured value is."""
        return measured - self.value if self.op == ">=" else self.value - measured

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Bar:
    criteria: tuple[Criterion, ...]

    @property
    def needs_labels(self) -> bool:
        return any(c.metric.startswith("accuracy") for c in self.criteria)

    def tolerance(self) -> Tolerance:
        """The output tolerance this bar implies (for the comparison table's pass/fail per output)."""
        cos = next((c.value for c in self.criteria if c.metric == "cosine"), None)
        top1 = next((c.value for c in self.criteria if c.metric == "top1"), None)
        atol = next((c.value for c in self.criteria if c.metric == "max-abs"), None)
        rtol = 0.0 if atol is not None else None
        return Tolerance(atol=atol, rtol=rtol, min_cosine=cos, min_top1=top1, source="--max-error")

    def check(self, proof: Proof) -> tuple[float, list[str]]:
        """The worst margin over the criteria (>= 0: met) and a line per missed criterion."""
        worst, missed = float("inf"), []
        for c in self.accuracy_criteria:
            measured = proof.metric(c.metric)
            if measured is None:
                raise InputError(
                    f"--max-error {c}: {c.metric} cannot be measured on this model",
                    hint="top1 needs an output that is class scores (name it with --classifier-output); accuracy needs labels (--labels or a labels array)",
                )
            margin = c.margin(measured)
            worst = min(worst, margin)
            if margin < 0:
                missed.append(f"{c.metric} {measured:.6g} (bar {c})")
        return worst, missed

    @property
    def accuracy_criteria(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if c.metric not in SPEED_METRICS)

    @property
    def speed_criteria(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if c.metric in SPEED_METRICS)

    def judge_speed(self, speedup: float) -> Verdict:
        """The speed terms' verdict on a measured speed-up (a bar without one is met)."""
        speed = Bar(self.speed_criteria)
        worst, missed = float("inf"), []
        for c in speed.criteria:
            margin = c.margin(speedup)
            worst = min(worst, margin)
            if margin < 0:
                missed.append(f"{c.metric} {speedup:.3g} (bar {c})")
        return Verdict(speed, worst, missed)

    def judge(self, proof: Proof) -> Verdict:
        """The bar's verdict on a proof: what the report's `max_error` record and `max-error` step say."""
        margin, missed = self.check(proof)
        return Verdict(self, margin, missed)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.criteria)


@dataclass(frozen=True)
class Verdict:
    """Whether a proof clears the bar, and a line per criterion it misses."""

    bar: Bar
    margin: float
    missed: list[str]

    @property
    def met(self) -> bool:
        return self.margin >= 0

    def to_dict(self) -> dict[str, Any]:
        """The report's `max_error` record (quantize adds its repair rounds to it)."""
        return {"bar": str(self.bar), "met": self.met, "missed": self.missed}

    def step(self) -> Step:
        return Step(f"max-error {self.bar}", "passed" if self.met else "failed", {"missed": self.missed} if self.missed else {})


def parse_bar(text: str, allow_speed: bool = False) -> Bar:
    """`cosine>=0.995`, `top1>=0.99,accuracy-drop<=0.01`: comma-separated; all must hold. `speedup>=1.2` only where
    the verb measures speed (`allow_speed`: quantize)."""
    criteria = []
    for part in [p for p in text.split(",") if p.strip()] or [text]:
        m = _SPEC.match(part)
        if not m:
            raise InputError(
                f"cannot parse --max-error '{text}'",
                hint="write METRIC>=VALUE or METRIC<=VALUE, e.g. cosine>=0.995, top1>=0.99, accuracy-drop<=0.01",
            )
        metric, op = m["metric"], m["op"]
        if metric not in METRICS:
            raise InputError(f"unknown metric '{metric}' in --max-error '{text}'", hint="metrics: " + ", ".join(METRICS))
        if metric in SPEED_METRICS and not allow_speed:
            raise InputError(f"--max-error {metric}: only quantize measures the speed-up", hint="drop it here")
        if op != METRICS[metric]:
            raise InputError(f"--max-error {metric} takes {METRICS[metric]}, not {op}", hint=f"e.g. {metric}{METRICS[metric]}...")
        try:
            value = float(m["value"])
        except ValueError:
            raise InputError(f"cannot parse the number in --max-error '{part.strip()}'") from None
        if metric in AT_MOST_ONE and value > 1:
            raise InputError(f"--max-error {part.strip()} can never be met: {metric} is at most 1",
                             hint=f"e.g. {metric}>=0.99")
        criteria.append(Criterion(metric, op, value))
    return Bar(tuple(criteria))
