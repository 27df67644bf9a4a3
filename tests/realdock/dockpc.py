"""What the scenarios ask of the guest dock PC, in the dock's own terms.

Waits are on states and events (the ledger, journald's BWC_* fields, QMP), each with a
generous deadline, never on sleeps: under TCG the guest runs about ten times slower
than a real PC, and CI machines are busy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.realdock.cameras import CameraImage
from tests.realdock.machine import Camera, Machine, MachineError, wait_until

BWC_DOCK = "/opt/bwc-dock/venv/bin/bwc-dock"  # the checks do not depend on PATH
LEDGER = "/var/lib/bwc-dock/ledger.sqlite3"
STAGING = "/var/lib/bwc-dock/staging"
EVIDENCE = "/mnt/evidence"
# where bwc-dock-mount (the privileged mount helper) mounts cameras, in the host namespace
MOUNTS = "/run/bwc-dock-mount/cameras"
OFFLOAD_TIMEOUT = 420.0

# Run in the guest by its own python3: every file of one camera in central storage with
# its SHA-256, and every leftover .part in staging and central storage.
_EVIDENCE_SCRIPT = r"""
import hashlib, json, os, sys
serial = sys.argv[1]
found = []
root = os.path.join("/mnt/evidence", serial)
for folder, _, names in os.walk(root):
    for name in names:
        path = os.path.join(folder, name)
        if name.endswith(".json") or name.startswith("SHA256SUMS") or ".part" in name:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        found.append({"path": os.path.relpath(path, "/mnt/evidence"), "sha256": digest.hexdigest()})
parts = []
for top in ("/mnt/evidence", "/var/lib/bwc-dock/staging"):
    for folder, _, names in os.walk(top):
        parts += [os.path.join(folder, name) for name in names if name.endswith(".part")]
print(json.dumps({"files": found, "parts": parts}))
"""


class DockPC:
    """The guest dock PC of one scenario group."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.plugged_since: dict[str, str] = {}  # camera serial -> guest time of its plug

    # -- the service ---------------------------------------------------------------------

    def unit(self, *properties: str) -> dict[str, str]:
        names = ",".join(properties)
        output = self.machine.run(["systemctl", "show", "-p", names, "bwc-dock"]).check().stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def main_pid(self) -> int:
        return int(self.unit("MainPID")["MainPID"])

    def wait_active(self, timeout: float = 300.0) -> dict[str, str]:
        """Until systemd calls the unit active/running: Type=notify, so READY=1 arrived."""

        def active() -> dict[str, str] | None:
            state = self.unit("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
            return state if state.get("SubState") == "running" else None

        return wait_until(active, timeout=timeout, what="bwc-dock active (READY=1)", interval=2)

    def daemon_mounts(self) -> list[tuple[str, str, str]]:
        """(mount point, options, source) of camera mounts as the daemon's own namespace
        sees them: the helper mounts in the host's namespace, and propagation brings them
        into the daemon's (PrivateMounts=yes, ProtectSystem=strict)."""
        pid = self.main_pid()
        if pid == 0:
            return []
        result = self.machine.run(["cat", f"/proc/{pid}/mountinfo"])
        mounts = []
        for line in result.stdout.splitlines():
            fields = line.split()
            separator = fields.index("-")
            if fields[4].startswith(MOUNTS + "/"):
                mounts.append((fields[4], fields[5], fields[separator + 2]))
        return mounts

    def daemon_capabilities(self) -> dict[str, int]:
        """CapEff, CapPrm, CapBnd and CapAmb of the daemon's main process, as numbers."""
        status = self.machine.run(["cat", f"/proc/{self.main_pid()}/status"]).check().stdout
        return {
            key: int(value.strip(), 16)
            for key, _, value in (line.partition(":") for line in status.splitlines())
            if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")
        }

    # -- the journal ---------------------------------------------------------------------

    def events(self, *matches: str, since: str | None = None) -> list[dict[str, Any]]:
        """bwc-dock's journal entries (all boots), optionally filtered: FIELD=VALUE."""
        command = ["journalctl", "-u", "bwc-dock", "-o", "json", "--no-pager", *matches]
        if since:
            command += ["--since", since]
        output = self.machine.run(command, timeout=120).stdout
        return [json.loads(line) for line in output.splitlines() if line.startswith("{")]

    def wait_event(
        self, *matches: str, count: int = 1, timeout: float = OFFLOAD_TIMEOUT,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.events(*matches, since=since)
            return found if len(found) >= count else None

        try:
            return wait_until(enough, timeout=timeout, what=f"journal {matches} x{count}",
                              interval=2)
        except MachineError as error:
            raise MachineError(f"{error}\n{self.story()}") from error

    def guest_now(self) -> str:
        """The guest clock, for journalctl --since (the host's may differ)."""
        return self.machine.run(["date", "+%Y-%m-%d %H:%M:%S"]).check().stdout.strip()

    def story(self, lines: int = 40) -> str:
        """The last journal lines of the unit and the kernel, and the serial console, for a
        failure message (the console alone when the guest no longer answers)."""
        try:
            unit = self.machine.run(
                ["journalctl", "-u", "bwc-dock", "-n", str(lines), "--no-pager", "-o", "cat"]
            ).stdout
            kernel = self.machine.run(["journalctl", "-k", "-n", "15", "--no-pager"]).stdout
        except (MachineError, AssertionError) as error:
            unit = kernel = f"(guest unreachable: {error})"
        console = self.machine.console_tail(15)
        return (
            f"--- bwc-dock journal:\n{unit}\n--- kernel:\n{kernel}\n"
            f"--- serial console ({self.machine.console_log}):\n{console}"
        )

    # -- the ledger ----------------------------------------------------------------------

    def clips(self, serial: str) -> list[dict[str, Any]]:
        """The camera's clips as the ledger has them (sqlite3 -json: quick under TCG)."""
        query = (
            "select id, source_path, size, sha256, state, remote_key from clips "
            f"where camera_serial = '{serial}' order by id"
        )
        result = self.machine.run(["sqlite3", "-readonly", "-json", LEDGER, query], timeout=60)
        if result.exit_code != 0:  # no ledger yet, or it is busy: nothing to report
            return []
        text = result.stdout.strip()
        return list(json.loads(text)) if text else []

    def wait_clips(
        self, serial: str, predicate_name: str, predicate: Any, timeout: float = OFFLOAD_TIMEOUT
    ) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            clips = self.clips(serial)
            if not clips:
                self.fail_if_unmountable(serial)
            return clips if predicate(clips) else None

        try:
            return wait_until(check, timeout=timeout, what=f"{serial}: {predicate_name}",
                              interval=2)
        except MachineError as error:
            raise MachineError(f"{error}\nclips: {self.clips(serial)}\n{self.story()}") from error

    def fail_if_unmountable(self, serial: str) -> None:
        """A camera the daemon cannot mount will never offload: say so now, with why."""
        since = self.plugged_since.get(serial)
        if since is None:
            return
        failures = self.events("BWC_EVENT=dock.mount_failed", f"BWC_SERIAL={serial}",
                               since=since)
        if failures:
            raise AssertionError(
                f"{serial} was not mounted: {failures[-1].get('MESSAGE')}\n{self.story()}"
            )

    def wait_mid_copy(self, serial: str, expected: int, done: int = 1) -> list[dict[str, Any]]:
        """Until ``done`` clips are copied off the camera while others are still on it."""
        on_camera = ("discovered", "copying")
        return self.wait_clips(
            serial, f"mid-copy ({done} of {expected} clips copied, the rest still on the camera)",
            lambda clips: len(clips) == expected
            and sum(clip["state"] not in on_camera for clip in clips) >= done
            and any(clip["state"] in on_camera for clip in clips),
        )

    def wait_uploaded(self, camera: CameraImage, timeout: float = OFFLOAD_TIMEOUT
                      ) -> list[dict[str, Any]]:
        clip_count = sum(1 for entry in camera.files if entry.path.endswith(".MP4"))
        return self.wait_clips(
            camera.serial, f"all {clip_count} clips uploaded",
            lambda clips: len(clips) == clip_count
            and all(clip["state"] == "uploaded" for clip in clips),
            timeout,
        )

    # -- the evidence --------------------------------------------------------------------

    def assert_exactly_once(self, camera: CameraImage) -> None:
        """Every file made on the host is in central storage exactly once, with the SHA-256
        taken on the host; the ledger agrees; audit verify passes; no .part is left."""
        result = self.machine.run(["python3", "-c", _EVIDENCE_SCRIPT, camera.serial],
                                  timeout=300).check()
        evidence = json.loads(result.stdout)
        stored = sorted(entry["sha256"] for entry in evidence["files"])
        assert stored == camera.hashes, (
            f"{camera.serial}: central storage holds {evidence['files']}, "
            f"the camera had {[(entry.path, entry.sha256) for entry in camera.files]}"
        )
        assert evidence["parts"] == [], f".part files left behind: {evidence['parts']}"
        ledger = {clip["source_path"]: clip["sha256"] for clip in self.clips(camera.serial)}
        for entry in camera.files:
            if entry.path.endswith(".MP4"):
                assert ledger.get(entry.path) == entry.sha256, (entry.path, ledger)
        self.assert_audit_verifies()

    def assert_audit_verifies(self) -> None:
        result = self.machine.run([BWC_DOCK, "audit", "verify"], timeout=300)
        assert result.exit_code == 0, f"audit verify failed: {result.stdout}{result.stderr}"

    # -- cameras -------------------------------------------------------------------------

    def plug(self, camera: CameraImage, *, bytes_per_second: int | None = None) -> Camera:
        fill_in_guest(self.machine, camera)
        plugged = self.machine.cameras.get(camera.serial) or self.machine.add_camera(
            camera.path, camera.serial, bytes_per_second=bytes_per_second
        )
        plugged.bytes_per_second = bytes_per_second
        self.plugged_since[camera.serial] = self.guest_now()
        self.machine.plug(plugged)
        return plugged


def fill_in_guest(machine: Machine, camera: CameraImage) -> None:
    """Write the camera's unwritten files into partition 1 of its image through the guest's
    exFAT driver, with the image attached as a virtio disk, then detach it cleanly."""
    if not camera.unwritten:
        return
    name = f"fill{camera.serial.lower()}"[:20]
    disk = machine.attach_disk(camera.path, name)
    partition = f"{disk}-part1"
    wait_until(lambda: machine.run(["test", "-b", partition]).exit_code == 0,
               timeout=120, what=f"{partition} in the guest")
    machine.run(["mkdir", "-p", "/run/fill"]).check()
    machine.run(["mount", "-t", "exfat", partition, "/run/fill"]).check()
    try:
        for relative, data in camera.unwritten:
            target = f"/run/fill/{relative}"
            machine.run(["mkdir", "-p", target.rsplit("/", 1)[0]]).check()
            machine.run(["/bin/sh", "-c", f"cat > '{target}'"], input_bytes=data).check()
            if relative in camera.stamps:  # the entry's wall clock, written as UTC fields
                machine.run(["env", "TZ=UTC", "touch", "-d", camera.stamps[relative],
                             target]).check()
    finally:
        machine.run(["umount", "/run/fill"]).check()
    machine.detach_disk(name)
    camera.unwritten = []


def write_guest_file(machine: Machine, path: str, text: str) -> None:
    machine.run(["/bin/sh", "-c", f"cat > '{path}'"], input_text=text).check()


@contextlib.contextmanager
def new_dock_pc(image: Path, accelerator: str, work: Path) -> Iterator[DockPC]:
    """A dock PC with fresh disks; QEMU is killed and the VM lock released at the end."""
    machine = Machine(image, work, accelerator)
    machine.create_disks()
    try:
        yield DockPC(machine)
    finally:
        if machine.process is not None:
            print(f"realdock: console tail of boot {machine.boots}:\n"
                  f"{machine.console_tail(30)}")
        machine.release()
