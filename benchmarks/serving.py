"""What serving through MLflow costs over running the model in process (issue 12's figures).

    .venv/bin/python benchmarks/serving.py [WORKDIR] [--requests 64] [--concurrency 1,4,16] [--skip-bert]

Two models, each packaged with `mdeploy package --target mlflow --smoke-test` (mdeploy.api.package): the real
`mlflow models serve --env-manager local` on 127.0.0.1, the validation inputs posted and compared, then a bounded
burst of `--requests` POSTs at each concurrency level (p50/p99 latency, requests/s). Beside them, `mdeploy benchmark`
(mdeploy.api.benchmark) of the same model on the same request in process, run before and after the server (their
spread is the machine's noise), so the serving overhead shows; and the server's own per-request work measured in
process (parse the JSON with the signature, pyfunc predict, encode the answer as JSON), so what the overhead is made
of shows too: for an encoder whose answer is its hidden states, mostly JSON.

- the digits CNN of fixtures/digits.py, trained here (a few seconds) and exported with a dynamic batch; a request is
  a batch of 2 images [2, 1, 8, 8];
- a BERT-base-size encoder (fixtures/models/bert_base.py, 110M parameters, random weights) exported to ONNX through
  mdeploy.api.convert with dynamic batch and sequence; a request is input_ids + attention_mask [2, 128] int64.

Client and server share this machine's CPUs: at concurrency > CPUs the client threads compete with the server for
them, so throughput there is the machine's, not the server's alone. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BERT_DYNAMIC = ["input_ids:0", "input_ids:1:sequence", "attention_mask:0", "attention_mask:1:sequence"]
BERT_REQUEST = ["input_ids:2x128:int64", "attention_mask:2x128:int64"]


def digits_model(work: Path) -> tuple[Path, list[str]]:
    from fixtures import digits

    files = digits.build(work / "digits")
    return files["model"], ["image:2x1x8x8"]


def bert_model(work: Path) -> tuple[Path, list[str]]:
    from mdeploy import api

    out = work / "bert_base.onnx"
    if out.exists():  # a WORKDIR from an earlier run: the same deterministic export
        print(f"  (BERT-size encoder: {out} from an earlier run)", flush=True)
        return out, BERT_REQUEST
    started = time.perf_counter()
    report = api.convert(f"{ROOT / 'fixtures' / 'models' / 'bert_base.py'}:build", str(out), dynamic=BERT_DYNAMIC)
    if not report.passed:
        raise SystemExit("converting the BERT-size encoder failed its validation")
    print(f"  (BERT-size encoder exported in {time.perf_counter() - started:.0f} s)", flush=True)
    return out, BERT_REQUEST


def pipeline_ms(package: Path, rounds: int = 5) -> tuple[dict[str, float], int]:
    """The scoring server's own work on one request, in process, median ms per stage: parsing the JSON body with the
    package's signature, mlflow.pyfunc's predict (signature enforced, then the model), encoding the answer as JSON;
    and the answer's size in bytes. What the p50 has beyond their sum is HTTP, uvicorn and the threads."""
    import io
    import json

    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server import predictions_to_json
    from mlflow.utils.proto_json_utils import parse_tf_serving_input

    model = mlflow.pyfunc.load_model(str(package))
    body = (package / "serving_input_example.json").read_text()
    schema = model.metadata.get_input_schema()
    times: dict[str, list[float]] = {"parse": [], "predict": [], "encode": []}
    size = 0
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        data = parse_tf_serving_input(json.loads(body), schema=schema)
        t1 = time.perf_counter()
        out = model.predict(data)
        t2 = time.perf_counter()
        buffer = io.StringIO()
        predictions_to_json(out, buffer)
        t3 = time.perf_counter()
        size = len(buffer.getvalue().encode())
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(seconds)
    return {k: 1000 * statistics.median(v[1:]) for k, v in times.items()}, size


def measure(name: str, model: Path, inputs: list[str], work: Path, requests: int, concurrency: str) -> None:
    from mdeploy import api

    def in_process() -> dict:
        report = api.benchmark([str(model)], inputs=inputs, warmup=3, iterations=max(10, requests // 4))
        return report.data["models"][0]["latency_ms"]

    package = work / f"{name.split()[0].lower()}_mlflow"
    before = in_process()  # the in-process figures bracket the server's, so machine noise shows as their spread
    started = time.perf_counter()
    report = api.package(str(model), "mlflow", str(package), inputs=inputs, smoke_test=True,
                         requests=requests, concurrency=concurrency, force=True)
    wall = time.perf_counter() - started
    after = in_process()
    stages, answer_bytes = pipeline_ms(package)
    smoke = report.data.get("smoke_test") or {}
    failed = [s for s in report.steps if s.status == "failed"]
    if failed or not report.passed:
        for step in failed:
            print(f"  FAILED {step.name}: {step.details.get('why')}\n    " + "\n    ".join(step.details.get("log", [])))
        raise SystemExit(f"{name}: the package or its server failed")
    median = statistics.median([before["p50"], after["p50"]])
    server_check = next(c for c in report.comparisons if c.label == "server")
    print(f"\n{name}: request {', '.join(inputs)}; package + smoke test {wall:.0f} s "
          f"(server ready in {smoke.get('startup_s', float('nan')):.1f} s); server answers vs model: "
          f"{'passed' if server_check.passed else 'FAILED'}")
    print(f"  {'':28} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>8} {'errors':>6}  {'p50 / in-process':>16}")
    for level in smoke["levels"]:
        print(f"  mlflow, concurrency {level['concurrency']:<7} {level['p50_ms']:9.2f} {level['p99_ms']:9.2f} "
              f"{level['throughput_rps']:8.1f} {level['errors']:6d}  {level['p50_ms'] / median:15.1f}x")
    for label, row in (("mdeploy benchmark, before", before), ("mdeploy benchmark, after", after)):
        print(f"  {label:28} {row['p50']:9.2f} {row['p99']:9.2f} {1000 / row['p50']:8.1f}         (in process, one caller)")
    print(f"  the server's own work per request, in process: parse {stages['parse']:.2f} ms, predict {stages['predict']:.2f} ms, "
          f"encode the answer {stages['encode']:.2f} ms ({answer_bytes / 1e6:.2f} MB of JSON)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", help="where the models and packages go (default: a temporary folder)")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--skip-bert", action="store_true", help="the digits CNN only (the BERT export takes minutes)")
    args = parser.parse_args()

    from mdeploy import machine

    print(f"CPU: {machine.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, inputs = digits_model(work)
        measure("digits CNN", model, inputs, work, args.requests, args.concurrency)
        if not args.skip_bert:
            model, inputs = bert_model(work)
            measure("BERT-base-size encoder", model, inputs, work, args.requests, args.concurrency)


if __name__ == "__main__":
    main()
