"""The multipart journal: unfinished multipart uploads kept in the ledger, so a restart
resumes the same upload id with the parts already sent instead of starting over."""

from __future__ import annotations

from sqlalchemy import delete, select

from bwc_dock.ledger.models import MultipartPart, MultipartUpload, utc_now
from bwc_dock.ledger.store import Store
from bwc_dock.storage.base import MultipartState, PartRecord


class LedgerMultipartJournal:
    """MultipartJournal kept in the ledger: a restart resumes the same upload id."""

    def __init__(self, store: Store, remote_key: str, clip_id: int | None) -> None:
        self.store = store
        self.remote_key = remote_key
        self.clip_id = clip_id

    def load(self) -> MultipartState | None:
        with self.store.transaction() as session:
            upload = session.get(MultipartUpload, self.remote_key)
            if upload is None:
                return None
            parts = session.scalars(
                select(MultipartPart)
                .where(MultipartPart.remote_key == self.remote_key)
                .order_by(MultipartPart.number)
            )
            return MultipartState(
                upload.upload_id,
                tuple(PartRecord(p.number, p.etag, p.checksum, p.size) for p in parts),
            )

    def begin(self, upload_id: str) -> None:
        with self.store.transaction() as session:
            session.execute(
                delete(MultipartPart).where(MultipartPart.remote_key == self.remote_key)
            )
            existing = session.get(MultipartUpload, self.remote_key)
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(
                MultipartUpload(
                    remote_key=self.remote_key,
                    clip_id=self.clip_id,
                    upload_id=upload_id,
                    started_at=utc_now(),
                )
            )

    def part_done(self, part: PartRecord) -> None:
        with self.store.transaction() as session:
            session.merge(
                MultipartPart(
                    remote_key=self.remote_key,
                    number=part.number,
                    etag=part.etag,
                    checksum=part.checksum,
                    size=part.size,
                )
            )

    def finish(self) -> None:
        with self.store.transaction() as session:
            session.execute(
                delete(MultipartPart).where(MultipartPart.remote_key == self.remote_key)
            )
            upload = session.get(MultipartUpload, self.remote_key)
            if upload is not None:
                session.delete(upload)


def wanted_upload_ids(store: Store) -> set[str]:
    """Upload ids the journal still means to finish (the rest are orphans)."""
    with store.transaction() as session:
        return set(session.scalars(select(MultipartUpload.upload_id)))
