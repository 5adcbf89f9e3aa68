"""Reload the policy when its files change, without a restart.

The files are polled (a ``stat`` of each, every 50 ms by default): cheap, and
it works on every filesystem. A changed file is loaded whole; a broken one is
logged with its file, line and reason and the policy in force stays in force
until the file is fixed.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import Callable

import structlog

from gateway.policy import Policy, PolicyError, load_policy, policy_files
from gateway.tasks import stop_task

log = structlog.get_logger("gateway.policy")

Signature = tuple[tuple[str, int, int, int], ...]


def files_signature(root: pathlib.Path) -> Signature:
    """What changes when a policy file is edited, added, removed or replaced."""
    try:
        out = []
        for path in policy_files(root):
            st = os.stat(path)
            out.append((path.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)
    except (OSError, PolicyError):
        return ()


class PolicyWatcher:
    """Polls ``policy.root`` and calls ``apply(new_policy)`` after every good change."""

    def __init__(
        self, policy: Policy, apply: Callable[[Policy], None], interval_s: float = 0.05
    ) -> None:
        if policy.root is None:
            raise ValueError("the policy was not loaded from files")
        self._root = policy.root
        self._apply = apply
        self._interval_s = interval_s
        self._signature = files_signature(self._root)
        self.version = policy.version
        self.reloads = 0
        self.rejected = 0
        #: The last refusal, until a good policy replaces it.
        self.last_error: PolicyError | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="policy-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def check(self) -> bool:
        """Reload if the files changed; True when a new policy was applied."""
        signature = files_signature(self._root)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            policy = load_policy(self._root)
        except PolicyError as exc:
            self.rejected += 1
            self.last_error = exc
            log.error(
                "policy.rejected",
                file=str(exc.path),
                line=exc.line,
                reason=exc.reason,
                kept_version=self.version,
            )
            return False
        except OSError as exc:  # a file vanished between listing and reading: next poll
            self._signature = ()
            log.warning("policy.unreadable", error=str(exc))
            return False
        self.last_error = None
        if policy.version == self.version:
            return False
        self._apply(policy)
        log.info("policy.reloaded", version=policy.version, previous_version=self.version)
        self.version = policy.version
        self.reloads += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self.check()
            except Exception as exc:  # never let one bad poll end the watching
                log.error("policy.watch_failed", error=repr(exc))
