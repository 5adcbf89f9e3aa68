"""pretrade-gateway: pre-trade enforcement for crypto exchange order entry.

Two ways to deploy:

* inside an exchange's own ``grpc.aio`` server::

      keeper = await Gatekeeper.open(redis_url, load_policy("limits"))
      server = grpc.aio.server(interceptors=[PreTradeInterceptor(keeper.engine)])

* as a standalone proxy: ``pretrade-gateway serve`` (see :mod:`gateway.server`).
"""

from gateway.engine import Gatekeeper, PreTradeEngine
from gateway.interceptor import PreTradeInterceptor
from gateway.model import AccountState, Action, SymbolStatus
from gateway.policy import Policy, PolicyError, load_policy
from gateway.reasons import STATUS_BY_REASON, Denial, Reason
from gateway.reliability import FailurePolicy, Operation

__all__ = [
    "STATUS_BY_REASON",
    "AccountState",
    "Action",
    "Denial",
    "FailurePolicy",
    "Gatekeeper",
    "Operation",
    "Policy",
    "PolicyError",
    "PreTradeEngine",
    "PreTradeInterceptor",
    "Reason",
    "SymbolStatus",
    "load_policy",
]
