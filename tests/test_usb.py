"""USB descriptors and vendor control transfers go through pyusb, behind UsbPort.

These machines have no USB bus (no /sys/bus/usb), so no real part can run here: the
tests plug a fake *pyusb backend* under the real pyusb core. The fake answers at the
level of the wire (GET_DESCRIPTOR requests, vendor requests), so pyusb's own device
lookup, string-descriptor decoding and control-transfer code paths all run for real.
"""

from __future__ import annotations

import array
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import usb.backend
import usb.core

from bwc_dock.config import ControlTransfer, parse_config
from bwc_dock.sources.identity import identity_from_properties
from bwc_dock.sources.udev import UdevSource
from bwc_dock.usb import UsbError, UsbLocation, UsbPort

_GET_DESCRIPTOR = 0x06
_STRING_DESCRIPTOR = 0x03
_ENGLISH = 0x0409


class FakeCamera:
    def __init__(self, bus: int, address: int, strings: dict[int, str],
                 vendor_id: int = 0x1234, product_id: int = 0x5678) -> None:
        self.bus = bus
        self.address = address
        self.strings = strings
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.vendor_requests: list[tuple[int, int, int, int, bytes]] = []
        self.vendor_answer = b""
        self.stalls = False


class FakeUsbBackend(usb.backend.IBackend):  # type: ignore[misc]  # pyusb has no types: IBackend is Any
    """A pyusb backend serving FakeCamera devices (there is no USB bus on these machines)."""

    def __init__(self, *cameras: FakeCamera) -> None:
        self.cameras = cameras
        self.open_handles = 0

    def enumerate_devices(self) -> Iterator[FakeCamera]:
        return iter(self.cameras)

    def get_device_descriptor(self, dev: FakeCamera) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vendor_id,
            idProduct=dev.product_id, bcdDevice=0x0100, iManufacturer=1, iProduct=2,
            iSerialNumber=3 if 3 in dev.strings else 0, bNumConfigurations=1,
            address=dev.address, bus=dev.bus, port_number=1, port_numbers=(1,), speed=3)

    def open_device(self, dev: FakeCamera) -> FakeCamera:
        self.open_handles += 1
        return dev

    def close_device(self, dev_handle: FakeCamera) -> None:
        self.open_handles -= 1

    def ctrl_transfer(self, dev_handle: FakeCamera, bmRequestType: int, bRequest: int,
                      wValue: int, wIndex: int, data: array.array[int], timeout: int) -> int:
        if dev_handle.stalls:
            raise usb.core.USBError("Pipe error", errno=32)
        if bRequest == _GET_DESCRIPTOR and wValue >> 8 == _STRING_DESCRIPTOR:
            return self._string(dev_handle, wValue & 0xFF, data)
        dev_handle.vendor_requests.append(
            (bmRequestType, bRequest, wValue, wIndex, bytes(data)))
        if bmRequestType & 0x80:
            answer = dev_handle.vendor_answer[: len(data)]
            data[: len(answer)] = array.array("B", answer)
            return len(answer)
        return len(data)

    @staticmethod
    def _string(camera: FakeCamera, index: int, data: array.array[int]) -> int:
        if index == 0:
            payload = _ENGLISH.to_bytes(2, "little")
        elif index in camera.strings:
            payload = camera.strings[index].encode("utf-16-le")
        else:
            raise usb.core.USBError("Pipe error", errno=32)
        descriptor = bytes([2 + len(payload), _STRING_DESCRIPTOR]) + payload
        data[: len(descriptor)] = array.array("B", descriptor)
        return len(descriptor)


def test_descriptors_are_read_and_cleaned() -> None:
    """Manufacturer, product and serial come from the string descriptors, control chars stripped."""
    camera = FakeCamera(3, 12, {1: "Acme Body Cams", 2: "BWC-9\x07", 3: " X81234567\n"})
    backend = FakeUsbBackend(FakeCamera(3, 11, {1: "Other"}), camera)
    descriptors = UsbPort(backend).descriptors(UsbLocation(3, 12))
    assert descriptors.vendor_id == "1234"
    assert descriptors.product_id == "5678"
    assert descriptors.manufacturer == "Acme Body Cams"
    assert descriptors.product == "BWC-9"
    assert descriptors.serial == "X81234567"
    assert backend.open_handles == 0  # handles are given back


def test_device_without_serial_descriptor() -> None:
    """A camera without iSerialNumber gives serial None, not an error."""
    backend = FakeUsbBackend(FakeCamera(1, 2, {1: "Acme", 2: "Cam"}))
    assert UsbPort(backend).descriptors(UsbLocation(1, 2)).serial is None


def test_missing_device_is_a_transient_usb_error() -> None:
    """Nothing at that bus/address (pulled, or re-enumerated): a UsbError that may heal."""
    with pytest.raises(UsbError) as raised:
        UsbPort(FakeUsbBackend()).descriptors(UsbLocation(9, 9))
    assert raised.value.transient


def test_vendor_control_transfer_reaches_the_device() -> None:
    """A profile's OUT vendor request arrives with its type, request, value, index and data."""
    camera = FakeCamera(2, 5, {})
    transfer = ControlTransfer(request_type=0x40, request=0xA5, value=1, index=2,
                               data_hex="deadbeef")
    assert UsbPort(FakeUsbBackend(camera)).send_control_transfer(
        UsbLocation(2, 5), transfer) == b""
    assert camera.vendor_requests == [(0x40, 0xA5, 1, 2, b"\xde\xad\xbe\xef")]


def test_vendor_in_transfer_returns_the_answer() -> None:
    """An IN vendor request returns what the device sent."""
    camera = FakeCamera(2, 5, {})
    camera.vendor_answer = b"\x01\x02"
    transfer = ControlTransfer(request_type=0xC0, request=0x01)
    assert UsbPort(FakeUsbBackend(camera)).send_control_transfer(
        UsbLocation(2, 5), transfer) == b"\x01\x02"


def test_stalled_control_transfer_is_a_usb_error() -> None:
    """A device that stalls the request raises UsbError, not pyusb's own exception."""
    camera = FakeCamera(2, 5, {})
    camera.stalls = True
    with pytest.raises(UsbError, match="control transfer"):
        UsbPort(FakeUsbBackend(camera)).send_control_transfer(
            UsbLocation(2, 5), ControlTransfer(request_type=0x40, request=1))


def _source(tmp_path: Path, backend: FakeUsbBackend) -> UdevSource:
    config = parse_config({
        "dock": {"state_dir": str(tmp_path)},
        "storage": {"backend": "file", "path": str(tmp_path / "central")},
        "camera": [
            {"name": "plain", "usb_vendor_id": "abcd"},
            {"name": "needs-wakeup", "usb_vendor_id": "1234", "usb_product_id": "5678",
             "control_transfer": {"request_type": 0x40, "request": 0x10, "value": 1}},
        ],
    })
    return UdevSource(config, usb=UsbPort(backend))


def test_source_sends_a_profiles_control_transfer_once_per_plug(tmp_path: Path) -> None:
    """The wake-up request goes out once per USB device appearance, only for its profile."""
    camera = FakeCamera(1, 4, {})
    source = _source(tmp_path, FakeUsbBackend(camera))
    location = UsbLocation(1, 4)
    assert source.send_control_transfer_if_wanted("/sys/usb/1-1", "1234", "5678", location)
    assert not source.send_control_transfer_if_wanted("/sys/usb/1-1", "1234", "5678", location)
    assert not source.send_control_transfer_if_wanted("/sys/usb/1-2", "abcd", "0001", location)
    assert camera.vendor_requests == [(0x40, 0x10, 1, 0, b"")]


def test_source_reads_the_serial_descriptor_when_udev_has_none(tmp_path: Path) -> None:
    """No ID_SERIAL_SHORT and no sysfs serial: the serial comes from the USB descriptor."""
    source = _source(tmp_path, FakeUsbBackend(FakeCamera(1, 4, {1: "A", 2: "B", 3: "SN/42"})))

    class UsbParent:  # sysfs-like data; the real udev walk runs in test_udev_source
        attributes = {"idVendor": b"1234", "idProduct": b"5678", "busnum": b"1",
                      "devnum": b"4"}

    identity = identity_from_properties(
        "/sys/x", {"DEVNAME": "/dev/sdb", "ID_FS_TYPE": "exfat", "ID_FS_USAGE": "filesystem"},
        UsbParent())
    profile = source._profiles[1]
    assert source._serial_before_mount(identity, profile) == "SN_42"
