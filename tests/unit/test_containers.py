"""docker/: the compose file, Prometheus config and Grafana dashboard hang together."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from gateway.metrics import Metrics
from gateway.snapshot import Snapshot
from tests.support.servers import ROOT

DOCKER = ROOT / "docker"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_topology() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "exchange", "gateway-1", "gateway-2", "prometheus", "grafana"}
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    for name in ("gateway-1", "gateway-2"):
        gw = services[name]
        assert gw["environment"]["PRETRADE_REDIS_URL"] == "redis://redis:6379/0"
        assert gw["environment"]["PRETRADE_UPSTREAM"] == "exchange:50061"
        assert gw["environment"]["PRETRADE_INSTANCE"] == name
        # Authentication is on: both replicas take the operator's admin token (required).
        assert gw["environment"]["PRETRADE_ADMIN_TOKEN"].startswith("${PRETRADE_ADMIN_TOKEN:?")
        assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["exchange"]["build"]["dockerfile"] == "docker/Dockerfile"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source} is missing"
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["gateway-1:9464", "gateway-2:9464"]


def test_dockerfile_is_small_non_root_and_health_checked() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("FROM python:3.11-slim") == 2, "multi-stage on a slim base"
    assert re.search(r"^USER pretrade$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and '"health"' in text
    assert "PRETRADE_METRICS_LISTEN=0.0.0.0:9464" in text


def _exported_names() -> set[str]:
    names: set[str] = set()
    for family in Metrics(Snapshot(), "t", "v").registry.collect():
        names.add(family.name)
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_count", "_sum"],
            "info": ["_info"],
        }
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(
        (DOCKER / "grafana" / "dashboards" / "pretrade-gateway.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"pretrade_[a-z_]+", e)}
    assert used, "no queries"
    assert used <= _exported_names(), used - _exported_names()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provisioning = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "dashboards" / "pretrade.yaml").read_text()
    )
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_parses_with_a_docker_client() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose client here")
    done = subprocess.run(
        [*command, "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PRETRADE_ADMIN_TOKEN": "compose-config-check-token"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_prometheus_config_checks_with_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    done = subprocess.run(
        [promtool, "check", "config", str(DOCKER / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
