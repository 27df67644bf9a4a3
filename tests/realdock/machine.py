"""A Debian 12 dock PC in QEMU, driven over QMP (the machine) and qemu-guest-agent (the OS).

The guest boots the image of ``scripts/realdock-image`` by direct kernel boot from a
virtio disk (``root=/dev/vda``), so ``sd_mod`` is not loaded at boot, as on a dock PC
booting from NVMe or eMMC. Central storage is a second virtio disk mounted at
/mnt/evidence. Cameras are disk image files hot-plugged as ``usb-storage`` on a
``qemu-xhci`` bus (QMP ``blockdev-add`` + ``device_add``) and yanked with ``device_del``.
A power cut is SIGKILL of QEMU; a reboot starts QEMU again on the same disks.

Every QEMU run holds /tmp/bwc-vm.lock (one VM at a time on the machine). KVM is used
when a short probe shows a guest kernel printing under it; otherwise TCG.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
VM_LOCK = Path("/tmp/bwc-vm.lock")
KERNEL_COMMAND_LINE = (
    "root=/dev/vda rw console=ttyS0,115200 panic=-1 systemd.show_status=1 "
    "systemd.journald.forward_to_console=0 tsc=reliable"
)
BOOT_TIMEOUT = 420.0  # TCG on a busy 2-core machine: 50-90 s is usual, give room
KVM_PROBE_SECONDS = 8.0
BOOT_STALL_SECONDS = 90.0
BOOT_ATTEMPTS = 3
MEMORY_MB = 1024

T = TypeVar("T")


class MachineError(RuntimeError):
    """The guest or QEMU did not do what the rig asked (with the console tail attached)."""


class KernelStalled(Exception):
    """The guest kernel stopped printing before user space (a TCG hang, not the product)."""


@dataclass(frozen=True)
class Completed:
    """One command run in the guest through qemu-guest-agent."""

    command: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def check(self) -> Completed:
        if self.exit_code != 0:
            raise MachineError(
                f"guest command {' '.join(self.command)} exited {self.exit_code}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
            )
        return self


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 1.0
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except MachineError as error:  # the guest may be busy or rebooting: look again
            last_error = error
            value = None
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise MachineError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


class _JsonSocket:
    """Newline-delimited JSON over a unix socket (QMP and the guest agent both speak it)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        self._socket.connect(str(path))
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        self._socket.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout: float) -> dict[str, Any]:
        self._socket.settimeout(timeout)
        while b"\n" not in self._buffer:
            chunk = self._socket.recv(65536)
            if not chunk:
                raise MachineError("connection closed by QEMU")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        line = line.strip(b"\xff").strip()  # guest-sync-delimited sends 0xff first
        if not line:
            return self.receive(timeout)
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()


class Qmp:
    """The QEMU Machine Protocol: commands and the events that arrive between them."""

    def __init__(self, path: Path) -> None:
        self._channel = _JsonSocket(path, 10.0)
        self.events: list[dict[str, Any]] = []
        self._channel.receive(10.0)  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._channel.send(message)
        while True:
            answer = self._channel.receive(60.0)
            if "event" in answer:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise MachineError(f"QMP {command} {arguments}: {answer['error']}")
            return answer.get("return")

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == name and all(
                    event.get("data", {}).get(key) == value for key, value in data.items()
                ):
                    self.events.remove(event)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MachineError(f"no QMP event {name} {data} within {timeout:.0f} s")
            with contextlib.suppress(TimeoutError, socket.timeout):
                self.events.append(self._channel.receive(remaining))

    def close(self) -> None:
        self._channel.close()


class GuestAgent:
    """qemu-guest-agent: run commands in the guest, see their exit code and output."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._channel: _JsonSocket | None = None
        self._sync_id = int(time.time()) % 100000

    def _connect(self) -> _JsonSocket:
        if self._channel is None:
            self._channel = _JsonSocket(self._path, 5.0)
            self._sync()
        return self._channel

    def _sync(self) -> None:
        """Throw away any stale answer: resend guest-sync until ours comes back."""
        assert self._channel is not None
        self._sync_id += 1
        self._channel.send({"execute": "guest-sync-delimited", "arguments": {"id": self._sync_id}})
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            answer = self._channel.receive(5.0)
            if answer.get("return") == self._sync_id:
                return
        raise MachineError("guest agent did not answer guest-sync")

    def call(self, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
        try:
            channel = self._connect()
            message: dict[str, Any] = {"execute": command}
            if arguments:
                message["arguments"] = arguments
            channel.send(message)
            answer = channel.receive(timeout)
        except (OSError, TimeoutError, ValueError) as error:
            self.reset()
            raise MachineError(f"guest agent {command}: {error}") from error
        if "error" in answer:
            raise MachineError(f"guest agent {command}: {answer['error']}")
        return answer.get("return")

    def reset(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None


@dataclass
class Camera:
    """A camera image plugged (or to be plugged) into the guest's USB bus."""

    image: Path
    serial: str
    device_id: str
    node: str
    throttle_group: str
    bytes_per_second: int | None = None
    plugged: bool = False


@dataclass
class Machine:
    """One dock PC: a boot disk overlay, an evidence disk, and QEMU when it runs."""

    image_dir: Path  # from scripts/realdock-image: image.raw, vmlinuz, initrd.img
    work_dir: Path
    accelerator: str = "tcg"
    process: subprocess.Popen[bytes] | None = None
    qmp: Qmp | None = None
    agent: GuestAgent | None = None
    boots: int = 0
    _console_seen: tuple[int, float] = (0, 0.0)
    cameras: dict[str, Camera] = field(default_factory=dict)
    _lock: Any = None

    # -- disks ---------------------------------------------------------------------------

    def create_disks(self, evidence_mb: int = 512) -> None:
        """A fresh copy-on-write boot disk over the cached image, and an empty evidence disk."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        overlay = self.work_dir / "boot.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(self.image_dir / "image.raw"), str(overlay)],
            check=True,
        )
        evidence = self.work_dir / "evidence.raw"
        evidence.unlink(missing_ok=True)
        with evidence.open("wb") as handle:
            handle.truncate(evidence_mb * 1024 * 1024)
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "evidence", str(evidence)], check=True)

    # -- power ---------------------------------------------------------------------------

    @property
    def console_log(self) -> Path:
        return self.work_dir / f"console-{self.boots}.log"

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def _command_line(self) -> list[str]:
        work = self.work_dir
        command = [
            "qemu-system-x86_64",
            "-machine", "q35",
            "-accel", self.accelerator,
            "-m", str(MEMORY_MB),
            "-smp", "2",
            "-kernel", str(self.image_dir / "vmlinuz"),
            "-initrd", str(self.image_dir / "initrd.img"),
            "-append", KERNEL_COMMAND_LINE,
            "-drive", f"file={work / 'boot.qcow2'},if=virtio,format=qcow2,cache=writeback",
            "-drive", f"file={work / 'evidence.raw'},if=virtio,format=raw,cache=writeback",
            "-device", "qemu-xhci,id=xhci",
            # q35's root bus takes no hot-plugged PCI device: a root port for virtio disks
            "-device", "pcie-root-port,id=hotplug0,chassis=1",
            "-chardev", f"socket,id=qga0,path={work / 'qga.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{work / 'qmp.sock'},server=on,wait=off",
            "-serial", f"file:{self.console_log}",
            "-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
        ]
        if self.accelerator == "kvm":
            command += ["-cpu", "host"]
        for camera in self.cameras.values():
            if camera.plugged:  # present at power-on: coldplug
                command += self._camera_arguments(camera)
        return command

    def _camera_arguments(self, camera: Camera) -> list[str]:
        limits = f"limits.bps-total={camera.bytes_per_second}" if camera.bytes_per_second else ""
        group = f"throttle-group,id={camera.throttle_group}" + (f",{limits}" if limits else "")
        blockdev = json.dumps(self._blockdev(camera))
        device = (
            f"usb-storage,bus=xhci.0,drive={camera.node},serial={camera.serial},"
            f"id={camera.device_id},removable=on"
        )
        return ["-object", group, "-blockdev", blockdev, "-device", device]

    @staticmethod
    def _blockdev(camera: Camera) -> dict[str, Any]:
        return {
            "driver": "throttle",
            "node-name": camera.node,
            "throttle-group": camera.throttle_group,
            "file": {
                "driver": "raw",
                "node-name": f"{camera.node}-raw",
                "file": {"driver": "file", "filename": str(camera.image)},
            },
        }

    def power_on(self) -> None:
        """Start QEMU (holding the VM lock) and wait until the guest agent answers.

        Under TCG a guest kernel now and then stops printing early in its boot and never
        goes on (seen once in about twenty boots on a loaded 2-core host, after
        "sched_clock: Marking stable", long before the root disk is mounted). A boot whose
        kernel has not reached user space and whose console stays silent for
        ``BOOT_STALL_SECONDS`` is powered off and started again, at most twice; each such
        retry is printed, so it shows in the test output.
        """
        if self._lock is None:
            self._lock = VM_LOCK.open("a")
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            self._start_qemu()
            try:
                wait_until(self._agent_answers, timeout=BOOT_TIMEOUT, what="the guest agent",
                           interval=2.0)
                # the rest of the boot (journald, udevd, bwc-dock) finishes in its own time
                self.run(["systemctl", "is-system-running", "--wait"], timeout=BOOT_TIMEOUT)
                return
            except KernelStalled as stall:
                print(f"realdock: boot {self.boots} attempt {attempt}: {stall}; "
                      "powering off and on again")
                self.power_cut()
            except MachineError as error:
                raise MachineError(f"{error}\nconsole:\n{self.console_tail()}") from error
        raise MachineError(f"the guest kernel stalled {BOOT_ATTEMPTS} times in a row\n"
                           f"console:\n{self.console_tail()}")

    def _start_qemu(self) -> None:
        self.boots += 1
        for name in ("qmp.sock", "qga.sock"):
            (self.work_dir / name).unlink(missing_ok=True)
        self.process = subprocess.Popen(
            self._command_line(),
            stdin=subprocess.DEVNULL,
            stdout=(self.work_dir / f"qemu-{self.boots}.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._console_seen = (0, time.monotonic())
        wait_until(lambda: (self.work_dir / "qmp.sock").exists() or self._died(),
                   timeout=30, what="the QMP socket", interval=0.1)
        self.qmp = Qmp(self.work_dir / "qmp.sock")
        self.agent = GuestAgent(self.work_dir / "qga.sock")

    def _check_kernel_progress(self) -> None:
        """Raise KernelStalled when the kernel went silent before reaching user space."""
        try:
            console = self.console_log.read_bytes()
        except FileNotFoundError:
            console = b""
        size, since = self._console_seen
        if len(console) != size:
            self._console_seen = (len(console), time.monotonic())
            return
        in_user_space = b"Run /init as init process" in console
        if not in_user_space and time.monotonic() - since > BOOT_STALL_SECONDS:
            last = console.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise KernelStalled(f"kernel silent for {BOOT_STALL_SECONDS:.0f} s at {last[0]!r}")

    def _died(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            output = (self.work_dir / f"qemu-{self.boots}.out").read_text(errors="replace")
            raise MachineError(f"QEMU exited {self.process.returncode}: {output[-2000:]}")
        return False

    def _agent_answers(self) -> bool:
        self._died()
        self._check_kernel_progress()
        assert self.agent is not None
        self.agent.call("guest-ping", timeout=5.0)
        return True

    def power_cut(self) -> None:
        """SIGKILL QEMU: the guest loses whatever it had not flushed to its disks."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._closed()

    def shut_down(self) -> None:
        """A clean poweroff (the end of a scenario), then QEMU is reaped."""
        if self.process is None:
            return
        with contextlib.suppress(MachineError):
            assert self.agent is not None
            self.agent.call("guest-shutdown", mode="powerdown")
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._closed()

    def _closed(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
        if self.agent is not None:
            self.agent.reset()
        # cameras keep their plugged flag: one plugged at a power cut is there at power-on
        self.process = self.qmp = self.agent = None

    def release(self) -> None:
        """Stop QEMU if it still runs and let the next VM start."""
        if self.process is not None:
            self.power_cut()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- guest commands ------------------------------------------------------------------

    def run(
        self,
        command: list[str],
        *,
        timeout: float = 120.0,
        input_text: str | None = None,
        input_bytes: bytes | None = None,
    ) -> Completed:
        """Run ``command`` in the guest as root; wait for it to end (or fail after timeout)."""
        assert self.agent is not None, "the machine is not running"
        arguments: dict[str, Any] = {
            "path": command[0], "arg": command[1:], "capture-output": True,
        }
        if input_text is not None:
            input_bytes = input_text.encode()
        if input_bytes is not None:
            arguments["input-data"] = base64.b64encode(input_bytes).decode()
        started = self.agent.call("guest-exec", **arguments)
        pid = started["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.agent.call("guest-exec-status", pid=pid)
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(MachineError):
                    self.agent.call("guest-exec", path="/bin/kill", arg=["-9", str(pid)])
                raise MachineError(f"guest command {command} still running after {timeout:.0f} s")
            time.sleep(0.3)

        def decode(key: str) -> str:
            return base64.b64decode(status.get(key, "")).decode(errors="replace")

        return Completed(tuple(command), status.get("exitcode", -1), decode("out-data"),
                         decode("err-data"))

    def shell(self, script: str, *, timeout: float = 120.0) -> Completed:
        return self.run(["/bin/sh", "-c", script], timeout=timeout)

    # -- cameras -------------------------------------------------------------------------

    def add_camera(self, image: Path, serial: str, *, bytes_per_second: int | None = None
                   ) -> Camera:
        index = len(self.cameras)
        camera = Camera(image, serial, f"camera{index}", f"cam{index}", f"throttle{index}",
                        bytes_per_second)
        self.cameras[serial] = camera
        return camera

    def plug(self, camera: Camera) -> None:
        """Hot-plug: a throttle group, the image as a block node, a usb-storage device."""
        assert self.qmp is not None
        limits = {"bps-total": camera.bytes_per_second} if camera.bytes_per_second else {}
        with contextlib.suppress(MachineError):  # left from an earlier plug of this camera
            self.qmp.execute("object-add", **{"qom-type": "throttle-group",
                                              "id": camera.throttle_group, "limits": limits})
        self.qmp.execute("blockdev-add", **self._blockdev(camera))
        self.qmp.execute("device_add", driver="usb-storage", bus="xhci.0", drive=camera.node,
                         serial=camera.serial, id=camera.device_id, removable=True)
        camera.plugged = True

    def set_camera_speed(self, camera: Camera, bytes_per_second: int | None) -> None:
        """Change the camera's read rate on the fly (0 or None: unlimited)."""
        assert self.qmp is not None
        camera.bytes_per_second = bytes_per_second
        self.qmp.execute("qom-set", path=camera.throttle_group, property="limits",
                         value={"bps-total": bytes_per_second or 0})

    def yank(self, camera: Camera) -> None:
        """Pull the camera out: device_del, then drop its block node once QEMU let go."""
        assert self.qmp is not None
        self.qmp.execute("device_del", id=camera.device_id)
        self.qmp.wait_event("DEVICE_DELETED", 60, device=camera.device_id)
        self.qmp.execute("blockdev-del", **{"node-name": camera.node})
        camera.plugged = False

    def attach_disk(self, image: Path, name: str) -> str:
        """Hot-plug ``image`` as a virtio disk (not USB: no camera profile matches it);
        returns its /dev/disk/by-id path prefix in the guest."""
        assert self.qmp is not None
        self.qmp.execute("blockdev-add", driver="raw", **{"node-name": name},
                         file={"driver": "file", "filename": str(image)})
        self.qmp.execute("device_add", driver="virtio-blk-pci", bus="hotplug0", drive=name,
                         id=name, serial=name)
        return f"/dev/disk/by-id/virtio-{name}"

    def detach_disk(self, name: str) -> None:
        assert self.qmp is not None
        self.qmp.execute("device_del", id=name)
        self.qmp.wait_event("DEVICE_DELETED", 60, device=name)
        self.qmp.execute("blockdev-del", **{"node-name": name})


@contextlib.contextmanager
def running(machine: Machine) -> Iterator[Machine]:
    try:
        yield machine
    finally:
        machine.release()


def kvm_works(image_dir: Path, scratch: Path) -> bool:
    """Boot the guest kernel under KVM for a few seconds: does it print anything?

    Nested KVM is broken on some hosts (``-cpu host`` aborts on an MSR, other models hang
    in the decompressor), so the answer is what a kernel does, not whether /dev/kvm exists.
    """
    override = os.environ.get("BWC_DOCK_REALDOCK_ACCEL")
    if override:
        return override == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    log = scratch / "kvm-probe.log"
    log.unlink(missing_ok=True)
    with VM_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256",
             "-kernel", str(image_dir / "vmlinuz"), "-append", "console=ttyS0 panic=-1",
             "-serial", f"file:{log}", "-display", "none", "-monitor", "none",
             "-nic", "none", "-no-reboot"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + KVM_PROBE_SECONDS
            while time.monotonic() < deadline and process.poll() is None:
                if log.exists() and b"Linux version" in log.read_bytes():
                    return True
                time.sleep(0.2)
            return False
        finally:
            process.kill()
            process.wait()


def qemu_available() -> bool:
    return all(shutil.which(name) for name in ("qemu-system-x86_64", "qemu-img", "mke2fs"))
