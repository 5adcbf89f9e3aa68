"""Run the benchmark suite: ``python -m bench.run [--smoke] [--scenario NAME ...]``.

Writes ``latest.json`` (everything), ``latest.md`` (the tables) and
``latency.png`` (percentile plots) to the output directory. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import pathlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from bench import counters_hook
from bench.lib import report
from bench.lib.context import Context, Result
from bench.lib.procs import ROOT, machine
from gateway.logs import configure_logging

#: Scenario name -> module in bench/scenarios (each has ``run(ctx) -> Result``), in run order.
SCENARIOS = {
    "decision": "bench.scenarios.decision",
    "roundtrips": "bench.scenarios.roundtrips",
    "e2e": "bench.scenarios.e2e",
    "peer": "bench.scenarios.peer",
    "scale": "bench.scenarios.scale",
    "workers": "bench.scenarios.workers",
    "propagation": "bench.scenarios.propagation",
}
RESULTS = ROOT / "bench" / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 2 repetitions: checks that every scenario works, not how fast",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--reps",
        type=int,
        help="repetitions per measurement (default 5, and 3 for e2e and workers; smoke 2 and 1)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        help=(
            "output directory (default: bench/results for a full run of every scenario, "
            "bench/results/smoke for --smoke, bench/results/partial for --scenario)"
        ),
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep logs and Redis data")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C, so every scenario stops the servers it started.
    signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    configure_logging("warning", json=True)
    names = args.scenario or list(SCENARIOS)
    out: pathlib.Path = args.out or (
        RESULTS / "smoke" if args.smoke else RESULTS / "partial" if args.scenario else RESULTS
    )
    out.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="pretrade-bench-"))
    ctx = Context(
        smoke=args.smoke,
        reps=args.reps or (2 if args.smoke else 5),
        scratch=scratch,
        policy=counters_hook.bench_policy(scratch),
        process_reps=args.reps or (1 if args.smoke else 3),
    )

    started = time.time()
    results: dict[str, Result] = {}
    try:
        for name in names:
            results[name] = _run_one(name, ctx)
    finally:
        if args.keep_scratch:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    document: dict[str, Any] = {
        "schema": 1,
        "mode": "smoke" if args.smoke else "full",
        "started_at": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "repetitions": ctx.reps,
        "command": " ".join(["python -m bench.run", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "counters_present": counters_hook.counters_present(),
        "scenarios": results,
    }
    document["targets"] = report.evaluate_targets(document)
    _write_json(out / "latest.json", document)
    (out / "latest.md").write_text(report.markdown(document))
    plot_error = report.plot(document, out / "latency.png")
    if plot_error == report.NOTHING_TO_PLOT:
        plot_error = None
    elif plot_error:
        print(f"plot not written: {plot_error}", file=sys.stderr)
    failed = [name for name, r in results.items() if r.get("status") != "ok"]
    print(f"results: {out / 'latest.json'} ({document['duration_s']} s)", file=sys.stderr)
    for name in failed:
        print(f"scenario {name} failed: {results[name].get('errors')}", file=sys.stderr)
    return 1 if failed or plot_error else 0


def _run_one(name: str, ctx: Context) -> Result:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        run: Callable[[Context], Result] = importlib.import_module(SCENARIOS[name]).run
        outcome = run(ctx)
    except Exception as exc:
        outcome = {
            "title": name,
            "status": "error",
            "errors": [f"{type(exc).__name__}: {exc}", traceback.format_exc()],
            "rows": [],
        }
    outcome["duration_s"] = round(time.perf_counter() - started, 2)
    print(
        f"[bench] {name}: {outcome['status']} in {outcome['duration_s']} s",
        file=sys.stderr,
        flush=True,
    )
    return outcome


def _write_json(path: pathlib.Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
