"""A loaded snapshot is kept out of the cyclic garbage collector's sight."""

from __future__ import annotations

import gc

from bench.lib.orders import flag_accounts
from gateway.engine import Gatekeeper
from gateway.policy import Policy
from gateway.records import HotTable


async def test_snapshot_records_are_frozen_after_every_load(redis_url: str) -> None:
    await flag_accounts(redis_url, [f"acct-{i}" for i in range(2000)])
    keeper = await Gatekeeper.open(redis_url, Policy(), auth=False)
    try:
        first = keeper.snapshot.accounts["acct-7"]
        assert isinstance(keeper.snapshot.accounts, HotTable)  # filled as loaded, not copied
        assert gc.is_tracked(first)
        assert not any(o is first for o in gc.get_objects())  # in the permanent generation

        await flag_accounts(redis_url, ["acct-late"])
        keeper.snapshot.replace_all(await keeper.flags.load_all())  # what a reconnect does
        late = keeper.snapshot.accounts["acct-late"]
        assert not any(o is late for o in gc.get_objects())
    finally:
        await keeper.close()
