"""Single-node and cluster Redis URLs."""

import pytest

from gateway.store.redis_client import ClusterTarget, cluster_target


def test_single_node_urls_are_not_clusters() -> None:
    assert cluster_target("redis://127.0.0.1:6380/0") is None


@pytest.mark.parametrize(
    ("url", "target"),
    [("redis+cluster://127.0.0.1:7000", ClusterTarget((("127.0.0.1", 7000),))),
     ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/",
      ClusterTarget((("10.0.0.1", 7000), ("10.0.0.2", 7001)))),
     ("redis+cluster://gw:s%3Acret@h:7000/0", ClusterTarget((("h", 7000),), "gw", "s:cret"))],
)  # fmt: skip
def test_cluster_urls(url: str, target: ClusterTarget) -> None:
    assert cluster_target(url) == target


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1", "redis+cluster://:7000", "redis+cluster://h:7000/2"]
)
def test_bad_cluster_urls(url: str) -> None:
    with pytest.raises(ValueError, match="bad Redis Cluster URL"):
        cluster_target(url)


def test_serve_refuses_a_bad_cluster_url() -> None:
    import subprocess
    import sys

    from tests.support.servers import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--redis-url", "redis+cluster://u:secret@h"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--redis-url: bad Redis Cluster URL" in done.stderr and "secret" not in done.stderr
