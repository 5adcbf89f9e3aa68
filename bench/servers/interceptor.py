"""An exchange's own gRPC server guarded by the interceptor (the embedded deployment).

``python -m bench.servers.interceptor --listen HOST:PORT --redis-url URL``: the
reference exchange's servicer on a ``grpc.aio`` server built exactly like the
bare one, plus ``PreTradeInterceptor``. Logs ``interceptor.ready`` when serving.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog
import uvloop
from grpc import aio

from gateway import Gatekeeper, PreTradeInterceptor, load_policy
from gateway.exchange import ReferenceExchange, add_to_server
from gateway.logs import configure_logging


async def serve(listen: str, redis_url: str, policy: str) -> None:
    keeper = await Gatekeeper.open(redis_url, load_policy(policy), auth=False)
    server = aio.server(interceptors=[PreTradeInterceptor(keeper.engine)])
    add_to_server(server, ReferenceExchange())
    port = server.add_insecure_port(listen)
    await server.start()
    structlog.get_logger("bench").info("interceptor.ready", port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(1.0)
        await keeper.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.interceptor")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--policy", required=True)
    args = parser.parse_args()
    configure_logging("info", json=True)
    uvloop.run(serve(args.listen, args.redis_url, args.policy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
