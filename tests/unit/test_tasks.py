"""stop_task ends a task even when the task takes a cancel for a timeout and runs on."""

import asyncio

from gateway.tasks import stop_task


async def test_a_swallowed_cancel_does_not_hang_the_stop() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed == 0:  # as a retry-on-timeout loop would, once
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task, recheck_s=0.05), timeout=5)
    assert task.done() and swallowed == 1


async def test_none_and_finished_tasks() -> None:
    await stop_task(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_task(done)
