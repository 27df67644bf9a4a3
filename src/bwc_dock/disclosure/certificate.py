"""CERTIFICATE.txt: the bag's clips in words a court reads, and how to check them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from bwc_dock import __version__
from bwc_dock.disclosure.plan import BagRequest, PlannedClip


def shown(text: str) -> str:
    """Text from a camera shown as text: control and non-ASCII characters escaped."""
    return text.encode("unicode_escape").decode("ascii")


def certificate_text(request: BagRequest, clips: list[PlannedClip], bagged_at: datetime,
                     dock_id: str) -> str:
    lines = [
        "CERTIFICATE OF DISCLOSURE",
        "",
        f"Case: {shown(request.case)}",
        f"Issued by: {shown(request.organization)}",
        f"Disclosed by: {shown(request.disclosed_by)}",
        f"Disclosed to: {shown(request.disclosed_to)}",
        f"Bagged at (UTC): {bagged_at.isoformat(timespec='seconds')}",
        f"Software: bwc-dock {__version__}, on dock {shown(dock_id)}",
        "",
        f"This bag holds {len(clips)} clip(s). Each was copied into the bag from the",
        "agency's central evidence storage, and every byte was hashed on the way and",
        "found equal to the SHA-256 taken when the clip was first read off the camera.",
        "",
    ]
    for number, clip in enumerate(clips, start=1):
        lines.extend(_clip_lines(number, clip))
    lines.extend([
        "How to verify: read README-VERIFY.txt in this bag. In short, in this folder:",
        "  sha256sum -c manifest-sha256.txt",
        "  ssh-keygen -Y verify -f AGENCY_KEY -I <name> -n bwc-disclosure \\",
        "      -s tagmanifest-sha256.txt.sig < tagmanifest-sha256.txt",
        "  python3 verify_bag.py . --allowed-signers AGENCY_KEY",
        "AGENCY_KEY is the agency's public key as the agency gave it to you, not only the",
        "copy in this bag.",
        "",
    ])
    return "\n".join(lines)


def _clip_lines(number: int, clip: PlannedClip) -> Iterable[str]:
    first = clip.records[0]
    yield f"{number}. {clip.clip.path}"
    yield f"   SHA-256: {clip.clip.stored.sha256}"
    yield f"   Size: {clip.clip.stored.size} bytes"
    yield f"   Camera: {shown(first.camera)}; its file name there: {shown(first.clip.name)}"
    yield f"   Recorded at (UTC): {shown(first.recorded_at)}"
    yield f"   Stored as: {shown(clip.key)}"
    for record, path in zip(clip.records, clip.record_paths, strict=True):
        yield (f"   Acquired at dock {shown(record.dock)}, read off the camera at (UTC)"
               f" {shown(record.staged_at or 'unknown')}; custody record {path}")
    for planned in clip.files[1:]:
        yield f"   With {planned.path} (SHA-256 {planned.stored.sha256})"
    yield ""
