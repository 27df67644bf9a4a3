"""Disclosure bags: a case's clips from two docks, bagged, signed, checked by others' tools.

Real parts: two docks (own dock ids, ledgers, ``bwc-dock ingest``) offloading into one
central store, a folder or the real SeaweedFS (one bucket per module); OpenSSH's
``ssh-keygen`` signs and verifies; the PyPI ``bagit`` package and coreutils'
``sha256sum`` validate; a real 48 KiB tmpfs fills up. Each forgery is made by hand, the
way someone holding the bag could.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dock import Dock, flip_byte, make_camera, sha256_of
from tests.realparts import need_command, need_root
from tests.seaweedfs import SeaweedServer

BAGIT = str(Path(sys.executable).parent / "bagit.py")
CASE = "CASE-2026-0042"
SIZES = [3000, 5000]
HOSTILE_NAME = "Wache 7 #50%.MP4"  # needs percent-encoding in a manifest: renamed instead
CLIP_FILES = (  # what make_camera writes for SIZES, by file name
    "20261124_000001_0001.MP4", "20261124_000001_0001.JPG", "20261124_000001_0001.GPS",
    "20261124_000002_0002.MP4", "20261124_000002_0002.JPG", "20261124_000002_0002.GPS",
    "20261124_000002_0002.LOG",
)


@dataclass
class Store:
    """The shared central store as the test sees it, around the product's back."""

    root: Path | None = None  # folder store
    server: SeaweedServer | None = None  # s3 store
    bucket: str = ""
    prefix: str = "bwc/"

    def configure(self, dock: Dock, dock_id: str, **sections: dict[str, object]) -> None:
        if self.server is None:
            assert self.root is not None
            self.root.mkdir(exist_ok=True)
            (self.root / ".bwc-dock-store").touch()  # the share's marker file
            dock.write_config(dock={"id": dock_id}, storage={"path": str(self.root)}, **sections)
            return
        dock.extra_environment.update(self.server.environment())
        dock.write_config(
            dock={"id": dock_id},
            storage={"backend": "s3", "endpoint_url": self.server.endpoint_url,
                     "allow_plaintext": True,  # the test server listens on loopback only
                     "bucket": self.bucket, "addressing_style": "path", "prefix": self.prefix,
                     "retry_initial_seconds": 0.2, "retry_max_seconds": 2.0},
            **sections,
        )

    def read(self, key: str) -> bytes | None:
        if self.server is None:
            assert self.root is not None
            path = self.root / key
            return path.read_bytes() if path.is_file() else None
        client = self.server.client()
        try:
            body: bytes = client.get_object(Bucket=self.bucket, Key=self.prefix + key)[
                "Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    def write(self, key: str, data: bytes) -> None:
        """Other bytes under a key, as someone with write access to the store could."""
        if self.server is None:
            assert self.root is not None
            (self.root / key).write_bytes(data)
        else:
            self.server.client().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def delete(self, key: str) -> None:
        if self.server is None:
            assert self.root is not None
            (self.root / key).unlink()
        else:
            self.server.client().delete_object(Bucket=self.bucket, Key=self.prefix + key)


@dataclass
class Disclosed:
    a: Dock  # the dock that bags (dock-a); dock-b offloaded the other camera
    b: Dock
    store: Store
    root: Path
    key_file: Path
    allowed_signers: Path  # made by the test from the agency's .pub, not the bag's copy
    keys: list[str]
    expected: dict[str, str]  # {payload path in the bag: sha256 of the camera's file}
    bag: Path


def _ingest(dock: Dock, camera: Path, serial: str) -> None:
    dock.cli("ingest", str(camera), "--camera-serial", serial, "--wait")


def _camera(folder: Path, seed: int) -> dict[str, str]:
    """A camera's files, {file name: sha256}, read from the camera folder itself."""
    make_camera(folder, SIZES, seed=seed)
    return {path.name: sha256_of(path) for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module", params=["folder", "s3"])
def disclosed(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Disclosed]:
    """CAMA offloaded at dock-a (with a clip whose name is hostile), CAMB at dock-b, one
    store; dock-a bags every clip of both for the case."""
    root = tmp_path_factory.mktemp(f"disclose-{request.param}")
    store = Store(root=root / "central")
    if request.param == "s3":
        server: SeaweedServer = request.getfixturevalue("seaweedfs")
        store = Store(server=server, bucket=server.create_bucket())
    key_file = root / "agency_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "disclosure",
                    "-f", str(key_file)], check=True)
    allowed_signers = root / "agency.allowed_signers"
    public = key_file.with_name(key_file.name + ".pub").read_text().split()
    allowed_signers.write_text(f'metro namespaces="bwc-disclosure" {public[0]} {public[1]}\n')
    a, b = Dock(root / "a"), Dock(root / "b")
    disclosure: dict[str, object] = {"organization": "Metro Police", "signing_key": str(key_file)}
    store.configure(a, "dock-a", disclosure=disclosure)
    store.configure(b, "dock-b")

    camera_a = _camera(root / "cam-a", seed=1)
    hostile = root / "cam-a" / "DCIM" / "100BWC" / HOSTILE_NAME
    hostile.write_bytes(b"hostile name, real bytes " * 100)
    _ingest(a, root / "cam-a", "CAMA")
    camera_b = _camera(root / "cam-b", seed=2)
    _ingest(b, root / "cam-b", "CAMB")

    expected = {f"data/CAMA/{name}": camera_a[name] for name in CLIP_FILES}
    expected["data/CAMA/Wache_7_50_.MP4"] = sha256_of(hostile)
    expected |= {f"data/CAMB/{name}": camera_b[name] for name in CLIP_FILES}
    keys = [clip["remote_key"] for dock in (a, b) for clip in dock.clips()]
    bag = root / "bag"
    a.cli("disclose", CASE, "--to", str(bag), *_key_options(keys),
          "--disclosed-by", "Evidence Officer 17", "--disclosed-to", "County Prosecutor")
    yield Disclosed(a, b, store, root, key_file, allowed_signers, keys, expected, bag)


def _key_options(keys: list[str]) -> list[str]:
    return [option for key in keys for option in ("--key", key)]


def _manifest(path: Path) -> dict[str, str]:
    lines = [line.split("  ", 1) for line in path.read_text().splitlines()]
    return {name: sha256 for sha256, name in lines}


def _bag_info(bag: Path) -> dict[str, str]:
    pairs = [line.split(": ", 1) for line in (bag / "bag-info.txt").read_text().splitlines()]
    return {label: value for label, value in pairs}


def _bagit_validates(bag: Path) -> bool:
    return subprocess.run([BAGIT, "--validate", str(bag)], capture_output=True,
                          check=False).returncode == 0


def _ssh_keygen_accepts(bag: Path, allowed_signers: Path) -> bool:
    with (bag / "tagmanifest-sha256.txt").open("rb") as signed:
        done = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", "metro",
             "-n", "bwc-disclosure", "-s", str(bag / "tagmanifest-sha256.txt.sig")],
            stdin=signed, capture_output=True, check=False)
    return done.returncode == 0


def _standalone(bag: Path, allowed_signers: Path) -> int:
    """The verifier shipped in the bag, run as a recipient would, with the system python."""
    return subprocess.run(["python3", str(bag / "verify_bag.py"), str(bag),
                           "--allowed-signers", str(allowed_signers)],
                          capture_output=True, check=False).returncode


def _rewrite_tag_manifest(bag: Path) -> None:
    """Recompute tagmanifest-sha256.txt over the tag files it lists, as a forger would."""
    manifest = bag / "tagmanifest-sha256.txt"
    names = [line.split("  ", 1)[1] for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(
        f"{hashlib.sha256((bag / name).read_bytes()).hexdigest()}  {name}\n" for name in names))


def _copy(disclosed: Disclosed, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(disclosed.bag, copy)
    return copy


def test_bag_of_two_docks_validates_with_bagit_sha256sum_and_ssh_keygen(
    disclosed: Disclosed,
) -> None:
    """The bag of clips from two docks passes bagit --validate, sha256sum -c, ssh-keygen
    -Y verify, disclose verify and its own verifier; payload = the cameras' bytes."""
    bag = disclosed.bag
    assert _bagit_validates(bag)
    assert subprocess.run(["sha256sum", "--quiet", "-c", "manifest-sha256.txt"], cwd=bag,
                          check=False).returncode == 0
    assert _ssh_keygen_accepts(bag, disclosed.allowed_signers)
    assert disclosed.a.cli("disclose", "verify", str(bag)).returncode == 0
    assert _standalone(bag, disclosed.allowed_signers) == 0
    assert _manifest(bag / "manifest-sha256.txt") == disclosed.expected
    info = _bag_info(bag)
    assert info["Source-Organization"] == "Metro Police"
    assert info["External-Identifier"] == CASE
    assert info["Disclosed-By"] == "Evidence Officer 17"
    assert info["Disclosed-To"] == "County Prosecutor"
    sizes = sum((bag / path).stat().st_size for path in disclosed.expected)
    assert info["Payload-Oxum"] == f"{sizes}.15"
    certificate = (bag / "CERTIFICATE.txt").read_text()
    for path, sha256 in disclosed.expected.items():
        if path.endswith(".MP4"):
            assert f"{path}\n   SHA-256: {sha256}\n" in certificate
    assert "Acquired at dock dock-a" in certificate
    assert "Acquired at dock dock-b" in certificate
    assert "its file name there: Wache 7 #50%.MP4" in certificate


def test_custody_records_are_copied_verbatim_from_both_docks(disclosed: Disclosed) -> None:
    """custody/ holds every offload's record exactly as stored, the camera's own name in it."""
    records = {path.name: path.read_bytes() for path in (disclosed.bag / "custody").iterdir()}
    stored = {}
    for dock, serial in ((disclosed.a, "CAMA"), (disclosed.b, "CAMB")):
        for clip in dock.clips("--camera", serial):
            key = dock.manifest_key(clip)
            stored[key.replace("/", "_")] = disclosed.store.read(key)
    assert records == stored
    assert sorted(name.split(".")[-3] for name in records) == ["dock-a"] * 3 + ["dock-b"] * 2
    assert any(HOSTILE_NAME.encode() in content for content in records.values())


def test_signature_hash_is_in_the_audit_log_and_central_storage(disclosed: Disclosed) -> None:
    """The signature's SHA-256 is an audit row of dock-a and a record in central storage."""
    signature = sha256_of(disclosed.bag / "tagmanifest-sha256.txt.sig")
    with sqlite3.connect(disclosed.a.ledger_path) as ledger:
        rows = ledger.execute(
            "SELECT sha256, details FROM audit_log WHERE event = 'disclosure.signed'").fetchall()
    assert [row[0] for row in rows] == [signature]
    assert json.loads(rows[0][1])["case"] == CASE
    record = disclosed.store.read(f"_disclosures/{CASE}/{signature}.json")
    assert record is not None
    assert json.loads(record)["signature_sha256"] == signature
    audit = json.loads((disclosed.bag / "audit/audit-rows.json").read_text())
    assert {row["event"] for row in audit["rows"]} >= {"clip.staged", "clip.uploaded"}
    assert {anchor["dock"] for anchor in audit["anchors"]} == {"dock-a", "dock-b"}


def test_one_flipped_payload_byte_is_caught(disclosed: Disclosed, tmp_path: Path) -> None:
    """A flipped byte in a clip fails bagit, sha256sum, disclose verify and verify_bag.py."""
    bag = _copy(disclosed, tmp_path)
    flip_byte(bag / "data/CAMB/20261124_000001_0001.MP4")
    assert not _bagit_validates(bag)
    assert subprocess.run(["sha256sum", "--quiet", "-c", "manifest-sha256.txt"], cwd=bag,
                          capture_output=True, check=False).returncode != 0
    result = disclosed.a.cli("disclose", "verify", str(bag), check=False)
    assert result.returncode == 1
    assert "data/CAMB/20261124_000001_0001.MP4: altered" in result.stderr
    assert _standalone(bag, disclosed.allowed_signers) == 1


def test_an_added_file_is_caught(disclosed: Disclosed, tmp_path: Path) -> None:
    """A file added to data/ fails bagit and our checks; one added beside it fails ours."""
    bag = _copy(disclosed, tmp_path)
    (bag / "data/CAMA/planted.MP4").write_bytes(b"not evidence")
    assert not _bagit_validates(bag)
    result = disclosed.a.cli("disclose", "verify", str(bag), check=False)
    assert result.returncode == 1
    assert "data/CAMA/planted.MP4: added" in result.stderr
    (bag / "data/CAMA/planted.MP4").unlink()
    (bag / "custody/extra-note.txt").write_text("planted")
    assert disclosed.a.cli("disclose", "verify", str(bag), check=False).returncode == 1
    assert _standalone(bag, disclosed.allowed_signers) == 1


def test_edited_bag_info_with_recomputed_tag_manifest_fails_the_signature(
    disclosed: Disclosed, tmp_path: Path
) -> None:
    """bagit accepts an edited bag-info.txt whose tag manifest was recomputed; ssh-keygen,
    disclose verify and verify_bag.py do not."""
    bag = _copy(disclosed, tmp_path)
    info = bag / "bag-info.txt"
    info.write_text(info.read_text().replace("County Prosecutor", "Someone Else"))
    _rewrite_tag_manifest(bag)
    assert _bagit_validates(bag)  # BagIt alone cannot tell
    assert not _ssh_keygen_accepts(bag, disclosed.allowed_signers)
    result = disclosed.a.cli("disclose", "verify", str(bag), check=False)
    assert result.returncode == 1
    assert "signature" in result.stderr
    assert _standalone(bag, disclosed.allowed_signers) == 1


def test_a_bag_re_signed_with_another_key_is_refused(disclosed: Disclosed, tmp_path: Path) -> None:
    """A forger who edits, recomputes, re-signs with a key of their own and swaps the key
    copy in the bag fools a check against that copy, not one against the agency's key."""
    bag = _copy(disclosed, tmp_path)
    forger_key = tmp_path / "forger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(forger_key)],
                   check=True)
    public = forger_key.with_name("forger.pub").read_text().split()
    (bag / "agency-allowed_signers").write_text(
        f'Metro_Police namespaces="bwc-disclosure" {public[0]} {public[1]}\n')
    info = bag / "bag-info.txt"
    info.write_text(info.read_text().replace("County Prosecutor", "Someone Else"))
    _rewrite_tag_manifest(bag)
    (bag / "tagmanifest-sha256.txt.sig").unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(forger_key), "-n", "bwc-disclosure",
                    str(bag / "tagmanifest-sha256.txt")], check=True, capture_output=True)
    assert _bagit_validates(bag)
    assert _standalone(bag, bag / "agency-allowed_signers") == 0  # why README-VERIFY warns
    assert not _ssh_keygen_accepts(bag, disclosed.allowed_signers)
    assert disclosed.a.cli("disclose", "verify", str(bag), check=False).returncode == 1
    assert _standalone(bag, disclosed.allowed_signers) == 1


def test_defence_rebag_verifies_against_its_parent(disclosed: Disclosed, tmp_path: Path) -> None:
    """A re-bag of one clip has the parent's bytes, names the parent's tag manifest, and
    verifies; a forged file in it, manifests recomputed, does not."""
    child = tmp_path / "defence"
    disclosed.a.cli("disclose", CASE, "--to", str(child), "--from-bag", str(disclosed.bag),
                    "--select", "CAMB/20261124_000002_0002.MP4", "--disclosed-to", "Defence")
    assert _bagit_validates(child)
    assert disclosed.a.cli("disclose", "verify", str(child)).returncode == 0
    assert _standalone(child, disclosed.allowed_signers) == 0
    names = ("MP4", "JPG", "GPS", "LOG")
    assert _manifest(child / "manifest-sha256.txt") == {
        f"data/CAMB/20261124_000002_0002.{ext}":
            disclosed.expected[f"data/CAMB/20261124_000002_0002.{ext}"] for ext in names}
    parent_tag_manifest = sha256_of(disclosed.bag / "tagmanifest-sha256.txt")
    assert _bag_info(child)["Parent-Tagmanifest-SHA256"] == parent_tag_manifest

    flip_byte(child / "data/CAMB/20261124_000002_0002.MP4")
    manifest = child / "manifest-sha256.txt"
    manifest.write_text("".join(
        f"{sha256_of(child / name)}  {name}\n" for name in _manifest(manifest)))
    _rewrite_tag_manifest(child)
    assert _bagit_validates(child)
    result = disclosed.a.cli("disclose", "verify", str(child), check=False)
    assert result.returncode == 1
    assert "not in the parent bag" in result.stderr


def test_standalone_rebag_needs_no_bwc_dock(disclosed: Disclosed, tmp_path: Path) -> None:
    """verify_bag.py rebag (what a prosecutor without bwc-dock runs) makes a bag that
    verifies against the agency's key; an ambiguous clip name is refused."""
    child = tmp_path / "defence"
    script = str(disclosed.bag / "verify_bag.py")
    ambiguous = subprocess.run(["python3", script, "rebag", str(disclosed.bag), "--to",
                                str(child), "--select", "20261124_000001_0001.MP4"],
                               capture_output=True, text=True, check=False)
    assert ambiguous.returncode == 1
    assert "names 2 clips" in ambiguous.stderr
    assert not child.exists()
    subprocess.run(["python3", script, "rebag", str(disclosed.bag), "--to", str(child),
                    "--select", "data/CAMA/Wache_7_50_.MP4"], check=True, capture_output=True)
    assert _standalone(child, disclosed.allowed_signers) == 0
    assert list(_manifest(child / "manifest-sha256.txt")) == ["data/CAMA/Wache_7_50_.MP4"]


def test_receipt_names_the_bag_it_acknowledges(disclosed: Disclosed) -> None:
    """verify_bag.py receipt prints, for a verified bag, the hashes the agency can match."""
    receipt = subprocess.run(
        ["python3", str(disclosed.bag / "verify_bag.py"), "receipt", str(disclosed.bag),
         "--allowed-signers", str(disclosed.allowed_signers), "--by", "Defence Counsel"],
        capture_output=True, text=True, check=True).stdout
    tag_manifest = sha256_of(disclosed.bag / "tagmanifest-sha256.txt")
    signature = sha256_of(disclosed.bag / "tagmanifest-sha256.txt.sig")
    assert f"Case: {CASE}\n" in receipt
    assert "Received by: Defence Counsel\n" in receipt
    assert f"Tag manifest SHA-256: {tag_manifest}\n" in receipt
    assert f"Signature SHA-256: {signature}\n" in receipt


def _error_lines(stderr: str) -> list[str]:
    """The command's error lines (an S3 store over plain HTTP also logs a warning)."""
    return [line for line in stderr.splitlines() if line.startswith("bwc-dock:")]


def _nothing_left(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_unknown_key_and_non_empty_target_are_one_line_errors(
    disclosed: Disclosed, tmp_path: Path
) -> None:
    """An unknown key, or a target holding files: exit 1, one line, nothing written."""
    unknown = disclosed.a.cli("disclose", CASE, "--to", str(tmp_path / "bag"),
                              "--key", "CAMA/2026/no-such-clip.MP4", check=False)
    assert unknown.returncode == 1
    assert _error_lines(unknown.stderr) == [
        "bwc-dock: CAMA/2026/no-such-clip.MP4: no custody record of this key in central"
        " storage (not a clip key bwc-dock stored?)"]
    assert _nothing_left(tmp_path) == []
    target = tmp_path / "full"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    busy = disclosed.a.cli("disclose", CASE, "--to", str(target),
                           *_key_options(disclosed.keys), check=False)
    assert busy.returncode == 1
    assert f"{target}: exists and is not empty" in busy.stderr
    assert _nothing_left(target) == ["keep.txt"]
    assert _nothing_left(tmp_path) == ["full"]


def test_missing_or_altered_store_objects_stop_the_bag(
    disclosed: Disclosed, tmp_path: Path
) -> None:
    """A clip gone from the store, or other bytes under its key: exit 1 naming the clip,
    and no bag (nor a temporary one) is left."""
    camera = tmp_path / "cam-c"
    make_camera(camera, [4000, 6000], seed=3, sidecars=False)
    _ingest(disclosed.a, camera, "CAMC")
    gone, altered = (clip["remote_key"] for clip in disclosed.a.clips("--camera", "CAMC"))
    disclosed.store.delete(gone)
    disclosed.store.write(altered, b"x" * 6000)
    out = tmp_path / "out"
    out.mkdir()
    missing = disclosed.a.cli("disclose", CASE, "--to", str(out / "bag"), "--key", gone,
                              check=False)
    assert missing.returncode == 1
    assert f"clip {gone}: {gone} is missing from central storage" in missing.stderr
    different = disclosed.a.cli("disclose", CASE, "--to", str(out / "bag"), "--key", altered,
                                check=False)
    assert different.returncode == 1
    assert f"clip {altered}: central storage holds other bytes" in different.stderr
    assert len(_error_lines(different.stderr)) == 1
    assert "Traceback" not in different.stderr
    assert _nothing_left(out) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 48 KiB tmpfs: less than the case's bag needs."""
    need_root()
    need_command("mount")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k,mode=0700", "bwc-test-disclose",
                    str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_leaves_no_bag(disclosed: Disclosed, tiny_disk: Path) -> None:
    """No space for the bag: exit 1 saying so, the disk left empty, nothing recorded."""
    result = disclosed.a.cli("disclose", CASE, "--to", str(tiny_disk / "bag"),
                             *_key_options(disclosed.keys), check=False)
    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    assert _nothing_left(tiny_disk) == []
    with sqlite3.connect(disclosed.a.ledger_path) as ledger:
        issued = ledger.execute(
            "SELECT count(*) FROM audit_log WHERE event = 'disclosure.signed'").fetchone()
    assert issued == (1,)  # the module's bag only


def test_a_case_on_legal_hold_is_bagged_without_naming_its_keys(
        disclosed: Disclosed, tmp_path: Path) -> None:
    """Without --key, disclose bags the clips the case's hold record in central storage
    names; the sidecars and custody records the hold also names travel with their clip."""
    [clip] = [c for c in disclosed.b.clips() if c["source_path"].endswith("_0002.MP4")]
    held = [clip["remote_key"], f"{clip['remote_key'][:-4]}.LOG",
            disclosed.b.manifest_key(clip)]
    record = {"format": "bwc-dock-hold/1", "case": "CASE-HELD", "action": "add",
              "at": "2026-12-01T09:00:00Z", "dock": "dock-b", "actor": "records-clerk",
              "keys": held, "versions": 3}
    if disclosed.store.root is not None:
        (disclosed.store.root / "_holds/CASE-HELD").mkdir(parents=True)
    disclosed.store.write("_holds/CASE-HELD/20261201T090000000000Z-dock-b.json",
                          json.dumps(record).encode())
    bag = tmp_path / "held"
    disclosed.a.cli("disclose", "CASE-HELD", "--to", str(bag))
    assert sorted(_manifest(bag / "manifest-sha256.txt")) == [
        "data/CAMB/20261124_000002_0002.GPS", "data/CAMB/20261124_000002_0002.JPG",
        "data/CAMB/20261124_000002_0002.LOG", "data/CAMB/20261124_000002_0002.MP4",
    ]
    unheld = disclosed.a.cli("disclose", "CASE-NONE", "--to", str(tmp_path / "none"),
                             check=False)
    assert unheld.returncode == 2
    assert unheld.stderr.splitlines()[-1].startswith(  # one line, after any warning logged
        "bwc-dock: disclose: case 'CASE-NONE' holds no clip in central storage")
