"""Run the load generator process on a plan and fold its phases into table rows."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.lib.procs import ROOT, python_env
from bench.lib.stats import measurement, median_of, merge_histograms, spectrum_from_histogram


def run_loadgen(plan: dict[str, Any], scratch: pathlib.Path, name: str) -> list[dict[str, Any]]:
    """Run ``python -m bench.loadgen`` on ``plan``; returns its phase results in order."""
    plan_path = scratch / f"{name}.plan.json"
    out_path = scratch / f"{name}.result.json"
    log_path = scratch / f"{name}.log"
    plan_path.write_text(json.dumps(plan))
    budget = 120.0 + sum(_phase_budget(p) for p in plan["phases"])
    with log_path.open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", str(plan_path), str(out_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=python_env(),
            timeout=budget,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{tail}")
    phases: list[dict[str, Any]] = json.loads(out_path.read_text())["phases"]
    return phases


def _phase_budget(phase: dict[str, Any]) -> float:
    if phase["mode"] == "sequential":
        return 10.0 + int(phase["count"]) * 0.02
    return 10.0 + float(phase["duration_s"]) * 3


def rows_from_phases(
    phases: Sequence[dict[str, Any]], descriptions: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per (phase id, target): medians over its repetitions, merged histogram."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for phase in phases:
        grouped[f"{phase['id']}_{phase['target']}"].append(phase)
    rows = []
    for name, group in grouped.items():
        reps = [p["rep"] for p in group]
        merged = merge_histograms(p["histogram"] for p in group)
        first = group[0]
        rows.append(
            measurement(
                name,
                descriptions.get(first["id"], first["id"]),
                reps,
                spectrum_from_histogram(merged),
                target=first["target"],
                mode=first["mode"],
                concurrency=first.get("concurrency"),
                rate_per_s=first.get("rate_per_s"),
                client_cpu_pct=median_of(reps, "client_cpu_pct"),
                server_cpu_pct=median_of(reps, "server_cpu_pct"),
            )
        )
    return rows
