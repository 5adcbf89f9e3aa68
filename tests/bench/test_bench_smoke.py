"""The benchmark suite's smoke run: every scenario works and reports what it must.

Structure only, never time: round trips per decision, no errors, results
written. The suite runs as a user runs it (``python -m bench.run --smoke``) in
a child process; this module imports nothing from ``bench/`` (and this folder
has no ``__init__.py``, so no package named ``bench`` shadows the suite's).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = ("decision", "roundtrips", "e2e", "peer", "scale", "workers", "propagation")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def counters_present() -> bool:
    """Whether this checkout's gateway has the counter step (not another checkout's)."""
    return (ROOT / "gateway" / "counters" / "__init__.py").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Any]:
    out = tmp_path_factory.mktemp("bench-smoke")
    # Its own process group: if it overruns, the servers it started go down with it.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        raise
    results = out / "latest.json"
    assert results.exists(), stderr[-4000:]
    document = json.loads(results.read_text())
    failed = {n: s["errors"][:1] for n, s in document["scenarios"].items() if s["status"] != "ok"}
    assert not failed, failed
    assert process.returncode == 0, stderr[-4000:]
    return out, document


def test_every_scenario_ran_without_errors(smoke: tuple[pathlib.Path, Any]) -> None:
    _, document = smoke
    assert document["mode"] == "smoke"
    assert set(document["scenarios"]) == set(SCENARIOS)
    for name, scenario in document["scenarios"].items():
        assert scenario["status"] == "ok", (name, scenario["errors"])
        assert scenario["errors"] == [], name
        for row in scenario["rows"]:
            if row.get("status") == "pending":
                continue
            assert row["count"] > 0, (name, row["name"])
            assert row["errors"] == 0, (name, row["name"])


def test_results_are_written(smoke: tuple[pathlib.Path, Any]) -> None:
    out, document = smoke
    for name in ("latest.json", "latest.md", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    markdown = (out / "latest.md").read_text()
    for name in SCENARIOS:
        assert f"## {name}:" in markdown
    assert document["machine"]["nproc"] >= 1
    assert document["machine"]["python"]
    assert {t["target"] for t in document["targets"]}


def test_redis_round_trips_per_decision(smoke: tuple[pathlib.Path, Any]) -> None:
    _, document = smoke
    cases = {c["name"]: c for c in document["scenarios"]["roundtrips"]["cases"]}
    full = 1 if counters_present() else 0
    assert cases["flag_refusal"]["round_trips_per_decision"] == 0
    assert cases["flag_refusal"]["commandstats_total"] == cases["flag_refusal"]["slowlog_total"]
    assert cases["full_decision"]["expected_round_trips"] == full
    assert cases["full_decision"]["round_trips_per_decision"] == full
    assert cases["full_decision_concurrent"]["round_trips_per_decision"] == full
    # The counting method itself: one EVALSHA is one round trip.
    assert cases["evalsha_control"]["round_trips_per_decision"] == 1
    assert all(c["complete"] for c in cases.values())


def test_the_full_decision_is_split_into_its_parts(smoke: tuple[pathlib.Path, Any]) -> None:
    _, document = smoke
    decision = document["scenarios"]["decision"]
    rows = {r["name"]: r for r in decision["rows"]}
    assert rows["accept_replayed_after_rtt"]["count"] > 0
    # The trivial script and the counter script, timed by Redis itself around each repetition.
    assert rows["evalsha_trivial"]["redis_us_per_call"] > 0
    if not counters_present():
        return
    split = decision["breakdown"]
    assert split["script_in_redis_us"] == rows["accept"]["redis_us_per_call"]
    assert split["round_trip_us"] == rows["evalsha_trivial"]["p50_us"]
    parts = split["round_trip_us"] + split["python_side_us"] + split["counter_call_extra_us"]
    assert parts == pytest.approx(split["full_decision_us"])
    assert any(note.startswith("Full decision p50") for note in decision["notes"])


def test_every_deployment_and_load_is_covered(smoke: tuple[pathlib.Path, Any]) -> None:
    _, document = smoke
    e2e = {r["name"] for r in document["scenarios"]["e2e"]["rows"]}
    for target in ("bare", "interceptor", "proxy"):
        for load in ("sequential", "closed_c1", "closed_c16", "closed_c64", "closed_c256"):
            assert f"{load}_{target}" in e2e
        assert any(name.startswith("open_") and name.endswith(target) for name in e2e)
    # The interceptor's added latency is set against a round trip timed in the same run.
    assert "redis_rtt_redis" in e2e
    added = document["scenarios"]["e2e"]["added_vs_rtt"]
    assert added["rounds"] >= 2 and added["rtt_us"] > 0
    assert added["ratio"] == added["added_us"] / added["rtt_us"]
    workers = {r["name"] for r in document["scenarios"]["workers"]["rows"]}
    assert {"accept_c64_1_workers", "accept_c64_2_workers", "refuse_c64_2_workers"} <= workers


def test_peer_and_scale_report_their_structure(smoke: tuple[pathlib.Path, Any]) -> None:
    _, document = smoke
    peer = {r["name"]: r for r in document["scenarios"]["peer"]["rows"]}
    for name in ("limits_moving_window", "limits_fixed_window"):
        assert peer[name]["round_trips_per_order"] >= 3  # three checks, one call each at least
    assert peer["evalsha_trivial"]["round_trips_per_order"] == 1
    counters = counters_present()
    assert (peer["ours"].get("status") == "pending") is not counters

    scale = document["scenarios"]["scale"]
    assert set(scale["sizes"]) == {"small", "large"}
    for gateway in scale["gateways"].values():
        assert gateway["wrong_decisions"] == 0
        assert gateway["rss_mb"] > 0
    assert scale["gateways"]["large"]["accounts"] == scale["sizes"]["large"]
    # One ratio per round, paired block by block: every round timed both gateways.
    assert scale["rounds"] >= 1
    for name in ("flag_refusal", "flag_refusal_same"):
        assert isinstance(scale["drift"][name], float)
        for size in scale["sizes"].values():
            measured = next(r for r in scale["rows"] if r["name"] == f"{name}_{size}")
            assert len(measured["reps"]) == scale["rounds"]
    assert document["scenarios"]["propagation"]["timeouts"] == 0
