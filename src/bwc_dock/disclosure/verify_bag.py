#!/usr/bin/env python3
"""Check a disclosure bag of body-worn-camera video, with nothing but Python 3 and OpenSSH.

    python3 verify_bag.py BAG --allowed-signers AGENCY_KEY_FILE
    python3 verify_bag.py rebag PARENT --to NEW_BAG --select NAME [--select NAME ...]
    python3 verify_bag.py receipt BAG --allowed-signers AGENCY_KEY_FILE --by "Your name"

The first form checks that nothing is missing, added or changed (every file's SHA-256),
that each video matches the SHA-256 in its custody record, and that the agency signed
the bag (``ssh-keygen -Y verify``). Exit status: 0 the bag is intact and signed by a
key in AGENCY_KEY_FILE; 1 something is missing, added, altered or wrongly signed;
2 the bag is intact but no agency key was given, so who made it is not established.

``rebag`` makes a bag of some of the clips of a bag received (prosecutor to defence):
the files are byte-for-byte the same, and the new bag carries the signed lists of the
bag it came from, so anyone can check that it descends unchanged from the agency's.
``receipt`` checks a bag and prints a receipt to sign and send back.

This file needs only the Python standard library (3.8 or later) and ``ssh-keygen``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

NAMESPACE = "bwc-disclosure"
BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
MANIFEST = "manifest-sha256.txt"
TAG_MANIFEST = "tagmanifest-sha256.txt"
SIGNATURE = TAG_MANIFEST + ".sig"
BAG_INFO = "bag-info.txt"
INDEX = "disclosure.json"
PARENT_FOLDER = "parent"
PARENT_FIELD = "Parent-Tagmanifest-SHA256"
# the only files of a bag that no manifest lists (the signature cannot list itself)
UNLISTED = frozenset({TAG_MANIFEST, SIGNATURE})
REQUIRED_TAG_FILES = ("bagit.txt", BAG_INFO, MANIFEST, INDEX)
PARENT_FILES = (TAG_MANIFEST, SIGNATURE, MANIFEST, BAG_INFO, INDEX)
_LINE = re.compile(r"^([0-9a-f]{64})[ ][ *](.+)$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_BLOCK = 1024 * 1024
MAX_TEXT = 64 * 1024 * 1024  # a manifest, bag-info, index or custody record larger is refused
_sync = getattr(os, "sync", lambda: None)  # Windows has none: its rename is the best there

EXIT_OK = 0
EXIT_ALTERED = 1
EXIT_UNSIGNED = 2


class BagProblem(Exception):
    """Something about the bag that makes it not what it claims to be."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signed_by: str | None = None  # the principal whose key made the signature
    descends_from: str | None = None  # a re-bag: its parent's tag manifest SHA-256
    payload_files: int = 0
    payload_bytes: int = 0

    @property
    def intact(self) -> bool:
        return not self.problems


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(path: Path) -> str:
    if path.stat().st_size > MAX_TEXT:
        raise BagProblem(f"{path.name}: larger than {MAX_TEXT} bytes")
    return path.read_bytes().decode("utf-8")


def parse_manifest(text: str, name: str) -> dict[str, str]:
    """{path: sha256} of a ``sha256sum``-style manifest; refuses unsafe or repeated paths."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if match is None:
            raise BagProblem(f"{name} line {number}: not 'SHA256  PATH'")
        digest, path = match.groups()
        if not _SAFE_PATH.match(path) or ".." in path.split("/"):
            raise BagProblem(f"{name} line {number}: unsafe path {path!r}")
        if path in entries:
            raise BagProblem(f"{name} line {number}: {path} listed twice")
        entries[path] = digest
    return entries


def parse_bag_info(text: str) -> dict[str, str]:
    """bag-info.txt as {label: value} (continuation lines joined, first value kept)."""
    fields: dict[str, str] = {}
    label = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and label is not None:
            fields[label] += " " + line.strip()
            continue
        label, separator, value = line.partition(":")
        if not separator:
            raise BagProblem(f"{BAG_INFO}: a line without 'Label: value': {line!r}")
        label = label.strip()
        fields.setdefault(label, value.strip())
    return fields


def every_file(bag: Path) -> list[str]:
    """Every regular file in the bag, relative, with '/'; links and odd files refused."""
    found = []
    for folder, folders, files in os.walk(bag):
        folders.sort()
        for name in sorted(folders + files):
            path = Path(folder) / name
            mode = path.lstat().st_mode
            relative = path.relative_to(bag).as_posix()
            if stat.S_ISLNK(mode):
                raise BagProblem(f"{relative}: a symbolic link (a bag holds only files)")
            if stat.S_ISREG(mode):
                found.append(relative)
            elif not stat.S_ISDIR(mode):
                raise BagProblem(f"{relative}: not a regular file")
    return found


def check_listed(report: Report, bag: Path, listed: dict[str, str], present: list[str],
                 what: str) -> None:
    """Every listed file present with its SHA-256, every present file listed."""
    found = set(present)
    for path in sorted(found - set(listed)):
        report.problems.append(f"{path}: added (not in {what})")
    for path, expected in sorted(listed.items()):
        if path not in found:
            report.problems.append(f"{path}: missing (listed in {what})")
        elif sha256_of(bag / path) != expected:
            report.problems.append(f"{path}: altered (its SHA-256 differs from {what})")


def check_structure(report: Report, bag: Path) -> dict[str, str]:
    """Completeness and every hash; returns the payload manifest."""
    if (bag / "bagit.txt").read_bytes() != BAGIT_TXT:
        report.problems.append("bagit.txt: not the BagIt 1.0 declaration this bag was made with")
    present = every_file(bag)
    payload = parse_manifest(read_text(bag / MANIFEST), MANIFEST)
    tags = parse_manifest(read_text(bag / TAG_MANIFEST), TAG_MANIFEST)
    for path in payload:
        if not path.startswith("data/"):
            report.problems.append(f"{MANIFEST}: lists {path}, which is not under data/")
    for path in tags:
        if path.startswith("data/") or path in UNLISTED:
            report.problems.append(f"{TAG_MANIFEST}: lists {path}, which it must not")
    for name in REQUIRED_TAG_FILES:
        if name not in tags:
            report.problems.append(f"{TAG_MANIFEST}: does not list {name}")
    data_files = [path for path in present if path.startswith("data/")]
    tag_files = [p for p in present if not p.startswith("data/") and p not in UNLISTED]
    check_listed(report, bag, payload, data_files, MANIFEST)
    check_listed(report, bag, tags, tag_files, TAG_MANIFEST)
    report.payload_files = len(data_files)
    report.payload_bytes = sum((bag / path).stat().st_size for path in data_files)
    return payload


def check_oxum(report: Report, info: dict[str, str]) -> None:
    expected = f"{report.payload_bytes}.{report.payload_files}"
    if info.get("Payload-Oxum") != expected:
        report.problems.append(
            f"{BAG_INFO}: Payload-Oxum {info.get('Payload-Oxum')!r}, the payload is {expected}"
        )


def check_custody(report: Report, bag: Path, payload: dict[str, str]) -> None:
    """Each clip and sidecar hashes to the SHA-256 its custody records give."""
    index = json.loads(read_text(bag / INDEX))
    named = set()
    for clip in index.get("clips", []):
        for item in clip["files"]:
            named.add(item["path"])
            if payload.get(item["path"]) != item["sha256"]:
                report.problems.append(f"{item['path']}: not the file {INDEX} describes")
        for record_path in clip["custody_records"]:
            check_record(report, bag, record_path, clip)
    for path in sorted(set(payload) - named):
        report.problems.append(f"{path}: in the payload but no clip of {INDEX} names it")


def check_record(report: Report, bag: Path, record_path: str, clip: dict[str, Any]) -> None:
    if not _SAFE_PATH.match(record_path) or ".." in record_path.split("/"):
        report.problems.append(f"{INDEX}: names an unsafe custody record path {record_path!r}")
        return
    try:
        record = json.loads(read_text(bag / record_path))
    except (OSError, ValueError) as error:
        report.problems.append(f"{record_path}: unreadable custody record ({error})")
        return
    by_key = {item["key"]: item["sha256"] for item in clip["files"]}
    stated = [(record.get("key"), record.get("sha256"))]
    stated += [(side.get("key"), side.get("sha256")) for side in record.get("sidecars", [])]
    for key, sha256 in stated:
        if by_key.get(key) != sha256:
            report.problems.append(
                f"{record_path}: records {key} with SHA-256 {sha256}; the bag's copy differs"
            )


def signers_of(signature: Path, allowed_signers: Path) -> list[str]:
    """The principals of ``allowed_signers`` whose key made ``signature``."""
    try:
        found = subprocess.run(
            ["ssh-keygen", "-Y", "find-principals", "-s", str(signature),
             "-f", str(allowed_signers)],
            capture_output=True, text=True, check=False,
        )
    except FileNotFoundError as error:
        raise BagProblem("ssh-keygen (OpenSSH 8.2 or later) is needed to check the"
                         " signature and is not installed") from error
    return found.stdout.split() if found.returncode == 0 else []


def signature_holds(signed: Path, signature: Path, allowed_signers: Path) -> str | None:
    """The principal whose key signed ``signed``, checked by ssh-keygen; None if none did."""
    if not signature.is_file():
        return None
    for principal in signers_of(signature, allowed_signers):
        with open(signed, "rb") as content:
            checked = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", principal,
                 "-n", NAMESPACE, "-s", str(signature)],
                stdin=content, capture_output=True, check=False,
            )
        if checked.returncode == 0:
            return principal
    return None


def check_signature(report: Report, folder: Path, allowed_signers: Path | None,
                    what: str) -> None:
    signature = folder / SIGNATURE
    if not signature.is_file():
        report.problems.append(f"{what}: {SIGNATURE} is missing (the bag is not signed)")
        return
    if allowed_signers is None:
        report.notes.append(f"{what}: signature not checked: no agency key was given")
        return
    principal = signature_holds(folder / TAG_MANIFEST, signature, allowed_signers)
    if principal is None:
        report.problems.append(
            f"{what}: the signature over {TAG_MANIFEST} does not verify with"
            f" {allowed_signers} (altered after signing, or signed by another key)"
        )
    else:
        report.signed_by = principal


def check_descent(report: Report, bag: Path, info: dict[str, str], payload: dict[str, str],
                  allowed_signers: Path | None) -> None:
    """A re-bag: its files are the parent's, and the parent's lists are the signed ones."""
    parent = bag / PARENT_FOLDER
    claimed = info.get(PARENT_FIELD, "")
    if sha256_of(parent / TAG_MANIFEST) != claimed:
        report.problems.append(f"{PARENT_FOLDER}/{TAG_MANIFEST}: not the one {BAG_INFO} names")
        return
    parent_tags = parse_manifest(read_text(parent / TAG_MANIFEST), "parent " + TAG_MANIFEST)
    for name in (MANIFEST, BAG_INFO, INDEX):
        if parent_tags.get(name) != sha256_of(parent / name):
            report.problems.append(f"{PARENT_FOLDER}/{name}: not the parent's (its hash differs)")
    parent_payload = parse_manifest(read_text(parent / MANIFEST), "parent " + MANIFEST)
    for path, sha256 in sorted(payload.items()):
        if parent_payload.get(path) != sha256:
            report.problems.append(f"{path}: not in the parent bag with this SHA-256")
    tags = parse_manifest(read_text(bag / TAG_MANIFEST), TAG_MANIFEST)
    for path, sha256 in sorted(tags.items()):
        if path.startswith("custody/") and parent_tags.get(path) != sha256:
            report.problems.append(f"{path}: not the parent's custody record")
    check_signature(report, parent, allowed_signers, "parent bag")
    report.descends_from = claimed


def verify(bag: Path, allowed_signers: Path | None) -> Report:
    """Every check of this file on ``bag``; problems listed, never raised."""
    report = Report()
    try:
        payload = check_structure(report, bag)
        info = parse_bag_info(read_text(bag / BAG_INFO))
        check_oxum(report, info)
        check_custody(report, bag, payload)
        if PARENT_FIELD in info:
            # a re-bag's own signature, if its maker added one, is theirs, not the agency's
            check_descent(report, bag, info, payload, allowed_signers)
        else:
            check_signature(report, bag, allowed_signers, "this bag")
    except (BagProblem, OSError, ValueError, KeyError, TypeError) as error:
        report.problems.append(f"cannot be checked as a disclosure bag: {error}")
    return report


def print_report(bag: Path, report: Report) -> int:
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    for note in report.notes:
        print(f"NOTE: {note}")
    if not report.intact:
        print(f"NOT VERIFIED: {bag}: {len(report.problems)} problem(s) above.")
        return EXIT_ALTERED
    summary = f"{report.payload_files} files, {report.payload_bytes} bytes"
    if report.signed_by is None:
        print(f"INTACT BUT NOT AUTHENTICATED: {bag}: {summary} match their lists, but who"
              " made the bag is not established; run again with --allowed-signers.")
        return EXIT_UNSIGNED
    if report.descends_from is not None:
        print(f"VERIFIED: {bag}: {summary}, every SHA-256 matches, each file unchanged from"
              f" the bag signed by {report.signed_by} whose {TAG_MANIFEST} has SHA-256"
              f" {report.descends_from}.")
        return EXIT_OK
    print(f"VERIFIED: {bag}: {summary}, every SHA-256 matches, signed by {report.signed_by}.")
    return EXIT_OK


# -- re-bagging a subset (prosecutor to defence) --------------------------------------------


def rebag(parent: Path, target: Path, selected: list[str], disclosed_by: str,
          disclosed_to: str) -> Path:
    """A bag of the selected clips of ``parent``: same files, same paths, same hashes,
    with the parent's signed lists under ``parent/``. Written beside ``target`` under a
    temporary name and renamed into place only when complete."""
    report = verify(parent, None)
    if not report.intact:
        raise BagProblem(f"{parent} does not verify: {report.problems[0]}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BagProblem(f"{target}: exists and is not empty")
    index = json.loads(read_text(parent / INDEX))
    for name in selected:
        matches = [clip["name"] for clip in index["clips"] if _chosen(clip, [name])]
        if not matches:
            raise BagProblem(f"no clip of {parent} is named {name!r}")
        if len(matches) > 1:
            raise BagProblem(f"{name!r} names {len(matches)} clips of {parent}"
                             f" ({', '.join(matches)}): give its folder too")
    clips = [clip for clip in index["clips"] if _chosen(clip, selected)]
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        _fill_rebag(parent, work, clips, index, disclosed_by, disclosed_to)
        _sync()  # every file of the new bag on disk before its name is: all of it or none
        os.replace(work, target)
        _sync()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _chosen(clip: dict[str, Any], selected: list[str]) -> bool:
    names = {clip["name"], "data/" + clip["name"], clip["name"].rsplit("/", 1)[-1], clip["key"]}
    return bool(names & set(selected))


def _fill_rebag(parent: Path, work: Path, clips: list[dict[str, Any]], index: dict[str, Any],
                disclosed_by: str, disclosed_to: str) -> None:
    payload = parse_manifest(read_text(parent / MANIFEST), MANIFEST)
    copied: dict[str, str] = {}
    for clip in clips:
        for path in [item["path"] for item in clip["files"]] + clip["custody_records"]:
            _copy(parent / path, work / path)
            copied[path] = sha256_of(work / path)
    for path, sha256 in copied.items():
        if path.startswith("data/") and payload[path] != sha256:
            raise BagProblem(f"{path}: changed while it was copied")
    for name in PARENT_FILES:
        _copy(parent / name, work / PARENT_FOLDER / name)
    for name in ("verify_bag.py", "README-VERIFY.txt"):
        if (parent / name).is_file():
            _copy(parent / name, work / name)
    child_index = dict(index, clips=clips, rebagged_from=sha256_of(parent / TAG_MANIFEST))
    (work / INDEX).write_text(json.dumps(child_index, indent=2, sort_keys=True) + "\n")
    data = {path: sha256 for path, sha256 in copied.items() if path.startswith("data/")}
    parent_info = parse_bag_info(read_text(parent / BAG_INFO))
    info = {
        "Source-Organization": parent_info.get("Source-Organization", ""),
        "External-Identifier": parent_info.get("External-Identifier", ""),
        "Bagging-Date": datetime.now(timezone.utc).date().isoformat(),  # noqa: UP017 - 3.8
        "Payload-Oxum": f"{sum((work / p).stat().st_size for p in data)}.{len(data)}",
        "Disclosed-By": disclosed_by,
        "Disclosed-To": disclosed_to,
        PARENT_FIELD: sha256_of(parent / TAG_MANIFEST),
        "Internal-Sender-Description": "a subset of the parent bag, files unchanged",
    }
    write_tag_files(work, data, info)


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)


def bag_info_text(info: dict[str, str]) -> str:
    """bag-info.txt; values on one line (line breaks in a value become spaces)."""
    return "".join(f"{label}: {' '.join(value.split())}\n" for label, value in info.items())


def write_tag_files(bag: Path, payload: dict[str, str], info: dict[str, str]) -> str:
    """bagit.txt, bag-info.txt, the payload manifest and the tag manifest over every other
    file outside data/; returns the tag manifest's SHA-256."""
    (bag / "bagit.txt").write_bytes(BAGIT_TXT)
    (bag / BAG_INFO).write_text(bag_info_text(info), encoding="utf-8")
    (bag / MANIFEST).write_text(
        "".join(f"{sha256}  {path}\n" for path, sha256 in sorted(payload.items())),
        encoding="utf-8")
    tags = [p for p in every_file(bag) if not p.startswith("data/") and p not in UNLISTED]
    (bag / TAG_MANIFEST).write_text(
        "".join(f"{sha256_of(bag / path)}  {path}\n" for path in sorted(tags)), encoding="utf-8")
    return sha256_of(bag / TAG_MANIFEST)


# -- a receipt ------------------------------------------------------------------------------


def receipt_text(bag: Path, report: Report, by: str) -> str:
    info = parse_bag_info(read_text(bag / BAG_INFO))
    signature = bag / SIGNATURE
    return (
        "RECEIPT FOR A DISCLOSURE BAG\n"
        f"Case: {info.get('External-Identifier', '')}\n"
        f"From: {info.get('Source-Organization', '')}\n"
        f"Received by: {by}\n"
        f"Checked at (UTC): {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"  # noqa: UP017
        f"Tag manifest SHA-256: {sha256_of(bag / TAG_MANIFEST)}\n"
        f"Signature SHA-256: {sha256_of(signature) if signature.is_file() else 'none'}\n"
        f"Files: {report.payload_files}, bytes: {report.payload_bytes}\n"
        f"Result: verified, signed by {report.signed_by}\n"
    )


def main(arguments: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if arguments is None else arguments
    if arguments[:1] == ["rebag"]:
        return _main_rebag(arguments[1:])
    parser = argparse.ArgumentParser(description="Verify a disclosure bag.")
    parser.add_argument("mode", nargs="?", choices=["receipt"], help=argparse.SUPPRESS)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--allowed-signers", type=Path, help="the agency's public key file")
    parser.add_argument("--by", default="", help="receipt: who received the bag")
    options = parser.parse_args(arguments)
    report = verify(options.bag, options.allowed_signers)
    status = print_report(options.bag, report)
    if options.mode == "receipt" and status == EXIT_OK:
        print()
        print(receipt_text(options.bag, report, options.by), end="")
    return status


def _main_rebag(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="verify_bag.py rebag",
                                     description="Make a bag of some clips of a bag.")
    parser.add_argument("parent", type=Path)
    parser.add_argument("--to", type=Path, required=True)
    parser.add_argument("--select", action="append", required=True, metavar="NAME")
    parser.add_argument("--disclosed-by", default="")
    parser.add_argument("--disclosed-to", default="")
    options = parser.parse_args(arguments)
    try:
        made = rebag(options.parent, options.to, options.select, options.disclosed_by,
                     options.disclosed_to)
    except (BagProblem, OSError) as error:
        print(f"verify_bag.py: {error}", file=sys.stderr)
        return EXIT_ALTERED
    print(f"made {made} from {options.parent}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
