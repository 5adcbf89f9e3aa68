#!/usr/bin/env python3
"""The docker/compose.yaml topology without Docker: processes started directly.

    python scripts/topology.py [--dir DIR] [--redis-port PORT] [--no-prometheus]

Starts one redis-server (AOF on), the reference exchange, two gateway replicas
on that Redis in front of that exchange (each with a Prometheus endpoint, both
taking the admin token in DIR/admin-token, made here, 0600), and
Prometheus scraping both when a ``prometheus`` binary is on PATH (skipped
otherwise). Ports are free ones picked at start (Redis's can be given).
Addresses go to DIR/topology.json and, as one JSON line, to stdout; logs to
DIR/logs/. Runs until SIGINT or SIGTERM, then stops everything, newest
first, and exits 0 (1 if a process died on its own).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from types import FrameType

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import EmbeddedRedis, free_port  # noqa: E402

READY_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: pathlib.Path


@dataclass
class Topology:
    root: pathlib.Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, args: list[str]) -> Child:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PRETRADE_LOG_LEVEL": "info"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True,  # our Ctrl-C is not theirs: we stop them in order
            )  # fmt: skip
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is not None]

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(15)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        self.children.clear()


def grpc_serving(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def wait_until(topology: Topology, what: str, probe: object) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = topology.dead()
        if dead:
            raise RuntimeError(f"{dead[0].name} exited at start; see {dead[0].log}")
        if probe():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready in {READY_TIMEOUT_S:.0f}s")


def prometheus_config(targets: list[str]) -> str:
    quoted = ", ".join(f'"{t}"' for t in targets)
    return (
        "global:\n  scrape_interval: 2s\n"
        "scrape_configs:\n"
        "  - job_name: pretrade-gateway\n"
        f"    static_configs:\n      - targets: [{quoted}]\n"
    )


def start(topology: Topology, redis_port: int | None, prometheus: bool) -> dict[str, object]:
    """Start everything into ``topology`` (so a failure half-way still stops what started)."""
    root = topology.root
    python = sys.executable
    # redis-server from the same command line as the gateway's own embedded one (AOF on),
    # but in a session of its own like every child, so it is stopped last.
    redis = EmbeddedRedis(root / "redis", port=redis_port)
    redis.data_dir.mkdir(parents=True, exist_ok=True)
    topology.spawn("redis", redis.command())
    wait_until(topology, "redis", redis.ping)
    redis_url = redis.url

    exchange = f"127.0.0.1:{free_port()}"
    topology.spawn("exchange", [python, "-m", "gateway", "exchange", "--listen", exchange])
    wait_until(topology, "exchange", lambda: grpc_serving(exchange))

    # One admin token for both replicas, as compose passes PRETRADE_ADMIN_TOKEN to both.
    from gateway.admin_auth import create_token_file

    token_file = root / "admin-token"
    if not token_file.exists():
        create_token_file(token_file)
    gateways = []
    for n in (1, 2):
        order, admin, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
        name = f"gateway-{n}"
        topology.spawn(name, [
            python, "-m", "gateway", "serve", "--listen", order, "--admin-listen", admin,
            "--redis-url", redis_url, "--upstream", exchange, "--metrics-listen", metrics,
            "--instance", name, "--policy", str(ROOT / "limits"),
            "--admin-token-file", str(token_file),
        ])  # fmt: skip
        gateways.append({"name": name, "order": order, "admin": admin, "metrics": metrics})
    for gw in gateways:
        wait_until(topology, gw["name"], lambda g=gw: grpc_serving(g["order"]))
        wait_until(topology, gw["name"], lambda g=gw: grpc_serving(g["admin"]))

    prometheus_address = None
    binary = shutil.which("prometheus") if prometheus else None
    if binary is not None:
        config = root / "prometheus.yml"
        config.write_text(prometheus_config([g["metrics"] for g in gateways]))
        prometheus_address = f"127.0.0.1:{free_port()}"
        topology.spawn("prometheus", [
            binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'prometheus'}",
            f"--web.listen-address={prometheus_address}",
        ])  # fmt: skip
        wait_until(topology, "prometheus", lambda: http_ok(f"http://{prometheus_address}/-/ready"))

    info = {
        "redis_url": redis_url,
        "redis_dir": str(root / "redis"),
        "exchange": exchange,
        "gateways": gateways,
        "admin_token_file": str(token_file),
        "prometheus": prometheus_address,
        "prometheus_skipped": None if binary else "prometheus not on PATH" if prometheus else "off",
        "pids": {c.name: c.process.pid for c in topology.children},
    }
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="working directory (default: a new temporary one)")
    parser.add_argument("--redis-port", type=int, help="Redis port (default: a free one)")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    args = parser.parse_args(argv)
    root = (
        pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="pretrade-"))
    )
    root.mkdir(parents=True, exist_ok=True)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    topology = Topology(root)
    try:
        info = start(topology, args.redis_port, not args.no_prometheus)
        (root / "topology.json").write_text(json.dumps(info, indent=2))
        print(json.dumps({"event": "topology.ready", **info}), flush=True)
        while not stopping:
            dead = topology.dead()
            if dead:
                print(f"topology: {dead[0].name} exited; see {dead[0].log}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"topology: {exc}", file=sys.stderr)
        return 1
    finally:
        topology.stop()
        print(json.dumps({"event": "topology.stopped"}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
