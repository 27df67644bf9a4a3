"""Whether the store really enforces Object Lock, asked of the store itself.

``storage probe`` and the daemon's start write a small canary under ``_probe/<dock>/``
with a one-day GOVERNANCE retention and a legal hold, then try to destroy it: delete
its version, delete it asking to bypass governance (the hold must still refuse), and
overwrite it (a new version may appear; the canary's must stay readable). A store that
lets any of these destroy the canary does not protect evidence, whatever it claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bwc_dock.config import Config
from bwc_dock.errors import BwcDockError, PermanentStorageError
from bwc_dock.logs import get_logger
from bwc_dock.names import safe_name
from bwc_dock.retention import require_enforcing_store
from bwc_dock.storage.base import LockCheck, StorageBackend

log = get_logger("bwc_dock.lock_probe")

PROBE_PREFIX = "_probe/"


@dataclass(frozen=True)
class ProbeReport:
    canary_key: str
    checks: tuple[LockCheck, ...]

    @property
    def enforced(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[LockCheck]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        """One sentence naming what the store allowed (empty when it refused it all)."""
        return "; ".join(f"{check.name}: {check.detail}" for check in self.failed)


def canary_key(dock_id: str, now: datetime) -> str:
    return f"{PROBE_PREFIX}{safe_name(dock_id.encode())}/{now:%Y%m%dT%H%M%S%fZ}.canary"


def probe_store(config: Config, backend: StorageBackend) -> ProbeReport:
    """Run the probe; a store that refuses even to write a locked canary (no Object Lock
    on the bucket) fails it. Errors that may heal (unreachable) are raised."""
    require_enforcing_store(config)
    key = canary_key(config.dock.id, datetime.now(UTC))
    try:
        checks = tuple(backend.probe_lock(key))
    except PermanentStorageError as error:
        checks = (LockCheck("canary_written", False,
                            f"the store refused a canary with retention and legal hold "
                            f"(is Object Lock enabled on the bucket?): {error}"),)
    report = ProbeReport(key, checks)
    if report.enforced:
        log.info("storage.lock_enforced", canary=key)
    else:
        log.error("storage.lock_unenforced", canary=key, failed=report.summary())
    return report


class StartProbe:
    """The probe the daemon runs once the store first answers, when Object Lock is
    configured: its verdict raises ``storage_lock_unenforced`` rather than trusting the
    store. A run cut short (the store unreachable) is tried at the next storage check."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.due = config.storage.backend == "s3" and bool(config.storage.object_lock_mode)
        self.unenforced = ""  # what the store allowed; empty when it refused it all

    def __call__(self, backend: StorageBackend) -> None:
        if not self.due:
            return
        try:
            report = probe_store(self.config, backend)
        except BwcDockError as error:
            log.warning("storage.probe_deferred", error=str(error))
            return
        self.due = False
        self.unenforced = "" if report.enforced else report.summary()
