"""The USB boundary: descriptors and vendor control transfers, through pyusb.

This is the only module that imports pyusb. The udev source asks it for the
manufacturer, product and serial strings when udev did not provide them, and for the
vendor control transfer some cameras need before they expose their storage. Devices are
found by their bus number and address (``busnum``/``devnum`` of the USB parent in sysfs).

The pyusb backend is pluggable: production uses pyusb's default (libusb-1.0); tests pass
a fake backend that answers like a device on the wire, because the test machines have no
USB bus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
import usb.core
import usb.util

from bwc_dock.config import ControlTransfer
from bwc_dock.errors import BwcDockError

log = structlog.get_logger(__name__)

TRANSFER_TIMEOUT_MILLISECONDS = 2000
_MAX_STRING_CHARACTERS = 126  # a string descriptor holds at most 126 UTF-16 units
_DIRECTION_IN = 0x80


class UsbError(BwcDockError):
    """A USB device could not be read or did not accept a control transfer."""

    # the camera may still be enumerating or was pulled: a later attempt may work
    transient = True


@dataclass(frozen=True)
class UsbLocation:
    """Where a device sits on the USB bus right now (changes on every replug)."""

    bus: int
    address: int


@dataclass(frozen=True)
class UsbDescriptors:
    vendor_id: str  # 4 lowercase hex digits
    product_id: str
    manufacturer: str | None
    product: str | None
    serial: str | None


def _clean_string(value: str | None) -> str | None:
    """Descriptor strings come from the camera: printable characters only, bounded."""
    if value is None:
        return None
    printable = "".join(character for character in value if character.isprintable())
    cleaned = printable.strip()[:_MAX_STRING_CHARACTERS]
    return cleaned or None


class UsbPort:
    """Reads descriptors and sends control transfers to one device at a time."""

    def __init__(self, backend: Any = None) -> None:
        """``backend``: a pyusb backend (``usb.backend.IBackend``); None for pyusb's default."""
        self._backend = backend

    def descriptors(self, location: UsbLocation) -> UsbDescriptors:
        device = self._find(location)
        try:
            return UsbDescriptors(
                vendor_id=f"{device.idVendor:04x}",
                product_id=f"{device.idProduct:04x}",
                manufacturer=self._string(device, device.iManufacturer),
                product=self._string(device, device.iProduct),
                serial=self._string(device, device.iSerialNumber),
            )
        finally:
            self._release(device)

    def send_control_transfer(self, location: UsbLocation, transfer: ControlTransfer) -> bytes:
        """Send ``transfer``; return the bytes read for an IN request, else b""."""
        device = self._find(location)
        try:
            if transfer.request_type & _DIRECTION_IN:
                length = len(bytes.fromhex(transfer.data_hex)) or 64
                answer = device.ctrl_transfer(
                    transfer.request_type,
                    transfer.request,
                    transfer.value,
                    transfer.index,
                    length,
                    TRANSFER_TIMEOUT_MILLISECONDS,
                )
                result = bytes(answer)
            else:
                device.ctrl_transfer(
                    transfer.request_type,
                    transfer.request,
                    transfer.value,
                    transfer.index,
                    bytes.fromhex(transfer.data_hex),
                    TRANSFER_TIMEOUT_MILLISECONDS,
                )
                result = b""
        except usb.core.USBError as error:
            raise UsbError(f"control transfer to {location} failed: {error}") from error
        except ValueError as error:
            raise UsbError(f"control transfer to {location} refused: {error}") from error
        finally:
            self._release(device)
        log.info(
            "usb.control_transfer",
            bus=location.bus,
            address=location.address,
            request_type=transfer.request_type,
            request=transfer.request,
            # what an IN request read (a descriptor, a status word): at most a few dozen
            # bytes, kept so a support case can see what the camera answered
            answer_hex=result.hex(),
        )
        return result

    def _find(self, location: UsbLocation) -> Any:
        try:
            device = usb.core.find(
                backend=self._backend, bus=location.bus, address=location.address
            )
        except usb.core.NoBackendError as error:
            raise UsbError("no USB backend (is libusb-1.0 installed?)") from error
        except usb.core.USBError as error:
            raise UsbError(f"cannot enumerate USB devices: {error}") from error
        if device is None:
            raise UsbError(f"no USB device at bus {location.bus} address {location.address}")
        return device

    @staticmethod
    def _string(device: Any, index: int) -> str | None:
        if not index:
            return None
        try:
            return _clean_string(usb.util.get_string(device, index))
        except (usb.core.USBError, ValueError, UnicodeDecodeError) as error:
            # a camera with broken string descriptors is still a camera: log and go on
            log.warning("usb.string_unreadable", index=index, error=str(error))
            return None

    @staticmethod
    def _release(device: Any) -> None:
        usb.util.dispose_resources(device)
