"""Kill switches and shadowed rules are flags: a gateway that starts later loads them."""

from __future__ import annotations

from gateway._generated.pretrade.v1 import admin_pb2 as apb
from gateway.engine import Gatekeeper
from gateway.model import FlagKind
from gateway.policy import load_policy
from gateway.reasons import Reason
from gateway.snapshot import now_ms
from tests.support.rpc import limit_order
from tests.support.servers import POLICY, running_gateway, test_settings


async def test_a_gateway_started_later_loads_kill_switches_and_shadow_rules(redis_url: str) -> None:
    async with running_gateway(test_settings(redis_url)) as (_, clients):
        await clients.admin.KillSwitch(
            apb.KillSwitchRequest(
                scope=apb.KILL_SWITCH_SCOPE_PRODUCT, id="spot", reason="r", actor="ops"
            )
        )
        await clients.admin.SetShadow(
            apb.SetShadowRequest(rule="*", enabled=True, reason="r", actor="ops")
        )
    keeper = await Gatekeeper.open(redis_url, load_policy(POLICY), auth=False)
    try:
        assert set(keeper.snapshot.kill_switches) == {"product:spot"}
        assert set(keeper.snapshot.shadow_rules) == {"*"}
        from gateway.engine import ORDER_METHODS

        place = ORDER_METHODS["/pretrade.v1.OrderEntry/PlaceOrder"]
        denial = await keeper.engine.screen(place, limit_order("alice"))
        assert denial is not None and denial.reason is Reason.KILL_SWITCH
        assert keeper.engine.shadow.covers(Reason.ACCOUNT_FROZEN, now_ms())
        # Lapsed records are purged like account states.
        keeper.snapshot.apply(
            FlagKind.KILL_SWITCH, "venue",
            {"value": "1", "reason": "r", "actor": "a", "updated_ms": "1", "expires_ms": "2", "version": "1"}, 1,
        )  # fmt: skip
        assert keeper.snapshot.purge_lapsed(now_ms()) == 1
        assert "venue" not in keeper.snapshot.kill_switches
    finally:
        await keeper.close()
