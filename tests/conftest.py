"""Shared fixtures: every test that needs Redis gets its own redis-server on a free port."""

from __future__ import annotations

import gc
import pathlib
from collections.abc import Iterator

import pytest

from gateway.embedded_redis import EmbeddedRedis
from gateway.logs import configure_logging

configure_logging("warning", json=True)


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    """Gateways freeze the heap after each snapshot load (gateway/heap.py): in a test
    process that would keep every earlier test's leftovers for good."""
    yield
    gc.unfreeze()


@pytest.fixture
def redis_server(tmp_path: pathlib.Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server (AOF on, like the embedded one), stopped after the test."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url
