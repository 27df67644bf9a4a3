"""Fleet documents a dock can prove it wrote: a key of its own, registered once.

At its first start the daemon makes an Ed25519 key under its state directory (the private
half readable only by the daemon), puts the public half once, create-only, at
``<fleet prefix>keys/<dock>.pub``, and signs every status document with
``ssh-keygen -Y sign -n bwc-dock-fleet``. ``bwc-dock fleet`` builds an OpenSSH
allowed_signers file from the registered keys and checks each document with
``ssh-keygen -Y verify``, as anyone can with free tools.

A verified document came from whoever holds the key first registered for that dock id.
It cannot show that documents were not deleted (a store admin can delete documents and
keys), and the first registration is trust on first use: whoever registers a dock id
first is that dock from then on. A key already registered for this dock id is never
replaced: a dock whose key differs is refused (``fleet.key_conflict``) and its documents
show as ``bad signature`` until an admin sorts it out.
"""

from __future__ import annotations

import enum
import json
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from bwc_dock.errors import BwcDockError, StorageConflict, StorageError
from bwc_dock.names import safe_name
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)

NAMESPACE = "bwc-dock-fleet"
KEYS_FOLDER = "keys/"
SIGNATURE_FIELD = "signature"
KEY_FILE_NAME = "fleet_ed25519"
MAX_KEY_BYTES = 4096  # a public key line is about 100 bytes
MAX_SIGNATURE_CHARS = 4096  # an Ed25519 SSH signature, armoured, is about 300
# ssh-keygen answers in milliseconds; this only stops a hung one
SSH_KEYGEN_TIMEOUT_SECONDS = 60
# only an Ed25519 key line goes into an allowed_signers file: no options, nothing else
_ED25519_LINE = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]{60,80}={0,2}")


class SignatureState(enum.StrEnum):
    VERIFIED = "verified"  # signed with the key first registered for this dock id
    UNSIGNED = "unsigned"
    BAD = "bad signature"  # signed, but not by that key, or altered since
    NO_KEY = "no registered key"  # signed, but no key is registered for this dock id


class FleetKeyError(BwcDockError):
    """The dock's fleet key cannot be made, read or used."""


class _Refused(FleetKeyError):
    """ssh-keygen ran and said no (for a verification: not a good signature)."""


def canonical(document: Mapping[str, Any]) -> bytes:
    """The bytes a status document is stored and signed as (its signature left out)."""
    unsigned = {key: value for key, value in document.items() if key != SIGNATURE_FIELD}
    return (json.dumps(unsigned, indent=1, sort_keys=True) + "\n").encode("utf-8")


def principal(dock_id: str) -> str:
    """The dock's name in an allowed_signers file and in its key's file name."""
    return safe_name(dock_id.encode())


def registered_key(prefix: str, dock_id: str) -> str:
    return f"{prefix}{KEYS_FOLDER}{principal(dock_id)}.pub"


# -- the dock's own key ---------------------------------------------------------------


class FleetSigner:
    """The dock's key: made at first start, registered once, signing each document."""

    def __init__(self, key_path: Path, dock_id: str, prefix: str) -> None:
        self.key_path = key_path
        self.dock_id = dock_id
        self.registered_key = registered_key(prefix, dock_id)
        self.public_line = _ensure_key(key_path, dock_id)
        self.registered = False
        self.conflict = ""  # why our key is not the registered one (the alarm's detail)

    def register(self, backend: StorageBackend) -> None:
        """Put the public key under the fleet prefix, create-only; once it is there, done.
        Another key there for this dock id is logged and left alone, never replaced."""
        if self.registered:
            return
        data = f"{self.public_line} bwc-dock fleet {principal(self.dock_id)}\n".encode()
        try:
            backend.put_bytes(self.registered_key, data, {}, replace=False)
        except StorageConflict:
            self.registered = True  # nothing to retry: an admin must look
            self.conflict = (f"{self.registered_key} holds another key than this dock's: its"
                             " status documents show as 'bad signature' in `bwc-dock fleet`")
            log.error("fleet.key_conflict", key=self.registered_key,
                      why="another key is registered for this dock id; it is kept, and this"
                      " dock's documents show as 'bad signature' in `bwc-dock fleet`",
                      do=f"if this dock is genuine, an admin deletes {self.registered_key}")
            return
        self.registered = True
        log.info("fleet.key_registered", key=self.registered_key)

    def signed(self, document: Mapping[str, Any]) -> bytes:
        """The document with its signature, as stored."""
        data = canonical(document)
        signature = _ssh_keygen(["-Y", "sign", "-f", str(self.key_path), "-n", NAMESPACE],
                                data, f"{self.key_path}: cannot sign with it")
        return _with_signature(document, signature.decode("ascii"))


def _with_signature(document: Mapping[str, Any], signature: str) -> bytes:
    signed = dict(document)
    signed[SIGNATURE_FIELD] = signature
    return (json.dumps(signed, indent=1, sort_keys=True) + "\n").encode("utf-8")


def key_path(state_dir: Path) -> Path:
    return state_dir / KEY_FILE_NAME


def _ensure_key(path: Path, dock_id: str) -> str:
    """``ssh-ed25519 BASE64`` of the dock's key, made first when it is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _ssh_keygen(["-q", "-t", "ed25519", "-N", "", "-C",
                     f"bwc-dock fleet {principal(dock_id)}", "-f", str(path)],
                    None, f"{path}: cannot make the dock's fleet key")
        log.info("fleet.key_made", path=str(path))
    path.chmod(0o600)  # the daemon's alone, whatever the umask was
    public = _ssh_keygen(["-y", "-f", str(path)], None, f"{path}: not a usable key")
    line = " ".join(public.decode("ascii", "replace").split()[:2])
    if not _ED25519_LINE.fullmatch(line):
        raise FleetKeyError(f"{path}: not an Ed25519 key")
    return line


def _ssh_keygen(arguments: list[str], stdin: bytes | None, failure: str) -> bytes:
    try:
        done = subprocess.run(["ssh-keygen", *arguments], input=stdin, capture_output=True,
                              check=False, timeout=SSH_KEYGEN_TIMEOUT_SECONDS,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError as error:
        raise FleetKeyError("ssh-keygen is not installed (Debian: openssh-client)") from error
    except subprocess.TimeoutExpired as error:
        raise FleetKeyError(f"{failure}: ssh-keygen did not finish") from error
    if done.returncode != 0:
        last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])
        raise _Refused(f"{failure}: {last[-1]}")
    return done.stdout


# -- checking documents ---------------------------------------------------------------


class FleetVerifier:
    """The keys registered under the fleet prefix, and the check of one document."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)  # principal -> "ssh-ed25519 BASE64"

    @classmethod
    def read(cls, backend: StorageBackend, prefix: str) -> FleetVerifier:
        """Every well-formed key under ``<prefix>keys/``; anything else is skipped."""
        folder = prefix + KEYS_FOLDER
        keys: dict[str, str] = {}
        for key in backend.list_keys(folder):
            name = key[len(folder):]
            if "/" in name or not name.endswith(".pub"):
                continue
            line = _read_key_line(backend, key)
            if line is not None:
                keys[name[: -len(".pub")]] = line
        return cls(keys)

    def has_key(self, dock_id: str) -> bool:
        return principal(dock_id) in self.keys

    def check(self, raw: Mapping[str, Any], dock_id: str) -> SignatureState:
        """Whether ``raw`` (a parsed document) is signed by ``dock_id``'s registered key."""
        signature = raw.get(SIGNATURE_FIELD)
        if signature is None:
            return SignatureState.UNSIGNED
        if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS:
            return SignatureState.BAD
        name = principal(dock_id)
        key = self.keys.get(name)
        if key is None:
            return SignatureState.NO_KEY
        return _verify(canonical(raw), signature, name, key)


def _read_key_line(backend: StorageBackend, key: str) -> str | None:
    try:
        data = backend.read_bytes(key, MAX_KEY_BYTES)
    except (StorageError, OSError) as error:
        log.warning("fleet.key_unreadable", key=key, error=str(error))
        return None
    if data is None:
        return None
    line = " ".join(data.decode("ascii", "replace").split()[:2])
    if not _ED25519_LINE.fullmatch(line):
        log.warning("fleet.key_malformed", key=key)
        return None
    return line


def _verify(data: bytes, signature: str, name: str, key: str) -> SignatureState:
    with tempfile.TemporaryDirectory(prefix="bwc-dock-fleet-") as folder:
        allowed = Path(folder) / "allowed_signers"
        allowed.write_text(f'{name} namespaces="{NAMESPACE}" {key}\n', encoding="ascii")
        signature_file = Path(folder) / "document.sig"
        signature_file.write_text(signature, encoding="utf-8")
        try:
            _ssh_keygen(["-Y", "verify", "-f", str(allowed), "-I", name, "-n", NAMESPACE,
                         "-s", str(signature_file)], data, "verify")
        except _Refused:
            return SignatureState.BAD
    return SignatureState.VERIFIED
