"""One resync run: plan a phase, carry it out (or, in a dry run, only report it), plan
the next against what the last one left, and sum it all up in a :class:`ResyncReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import structlog

from bwc_dock.config import Config
from bwc_dock.ledger import Ledger
from bwc_dock.resync.apply import Applier, Carrier, PlanOnly, Progress
from bwc_dock.resync.plan import Planner
from bwc_dock.resync.repairs import (
    Action,
    AdoptStagedCopy,
    Outcome,
    Repair,
    Status,
    Unrepairable,
    describe,
)
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)


@dataclass
class ResyncReport:
    dry_run: bool
    daemon_alive: bool
    clips_checked: int = 0
    actions: list[Action] = field(default_factory=list)
    unrepairable: list[Unrepairable] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    copied: int = 0
    uploaded: int = 0
    plan: list[dict[str, object]] = field(default_factory=list)  # each repair and its outcome

    @property
    def ok(self) -> bool:
        return not self.unrepairable

    def record(self, repair: Repair, outcome: Outcome) -> None:
        if outcome.action is not None:
            self.actions.append(outcome.action)
            log.warning(
                "resync.found",
                kind=outcome.action.kind,
                clip=outcome.action.clip_id,
                camera=outcome.action.camera_serial,
                detail=outcome.action.detail,
                action=outcome.action.action,
                dry_run=self.dry_run,
            )
        self.unrepairable.extend(outcome.unrepairable)
        self.copied += outcome.copied
        self.uploaded += outcome.uploaded
        self.plan.append(
            {**describe(repair), "outcome": str(outcome.status), "error": outcome.error}
        )

    def document(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "daemon_alive": self.daemon_alive,
            "clips_checked": self.clips_checked,
            "actions": [asdict(a) for a in self.actions],
            "unrepairable": [asdict(u) for u in self.unrepairable],
            "busy": self.busy,
            "copied": self.copied,
            "uploaded": self.uploaded,
            "plan": self.plan,
        }


class Resync:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        backend: StorageBackend,
        *,
        daemon_alive: bool,
        camera_serial: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.camera_serial = camera_serial
        self.dry_run = dry_run
        self.report = ResyncReport(dry_run, daemon_alive)
        self.planner = Planner(
            config,
            ledger,
            backend,
            daemon_alive=daemon_alive,
            camera_serial=camera_serial,
            progress=progress,
        )
        self.carrier: Carrier = (
            PlanOnly()
            if dry_run
            else Applier(config, ledger, backend, camera_serial=camera_serial, progress=progress)
        )

    def run(self) -> ResyncReport:
        log.info("resync.started", dry_run=self.dry_run, daemon_alive=self.report.daemon_alive)
        self.carrier.begin({"daemon_alive": self.report.daemon_alive})
        try:
            self._phases()
        finally:
            self.carrier.close()
        self._finish()
        return self.report

    def _phases(self) -> None:
        """Staging, then the docked cameras, then every clip, then (no daemon) the work
        itself, then the SHA256SUMS anchors: each planned once the one before is done."""
        staging = self._carry_out(self.planner.staging())
        adopted = {r.clip_id for r, _ in staging if isinstance(r, AdoptStagedCopy)}
        not_in_place = {
            r.clip_id
            for r, outcome in staging
            if isinstance(r, AdoptStagedCopy) and outcome.status is Status.PLANNED
        }
        docked = self.planner.docked_cameras()
        self._carry_out(self.planner.rescans(docked))
        clips = self.planner.clips(docked, adopted, not_in_place)
        self.report.clips_checked += clips.checked
        self.report.busy.extend(clips.busy)
        self._carry_out(clips.repairs)
        self._carry_out(self.planner.own_work())
        self._carry_out(self.planner.anchors(self.carrier.requeued))

    def _carry_out(self, repairs: Sequence[Repair]) -> list[tuple[Repair, Outcome]]:
        done = []
        for repair in repairs:
            outcome = self.carrier.apply(repair)
            self.report.record(repair, outcome)
            done.append((repair, outcome))
        return done

    def _finish(self) -> None:
        for problem in self.report.unrepairable:
            log.error(
                "resync.unrepairable",
                clip=problem.clip_id,
                camera=problem.camera_serial,
                problem=problem.problem,
            )
        summary = {
            "actions": len(self.report.actions),
            "unrepairable": len(self.report.unrepairable),
            "copied": self.report.copied,
            "uploaded": self.report.uploaded,
        }
        log.info("resync.done", dry_run=self.dry_run, **summary)
        self.carrier.end(summary)
