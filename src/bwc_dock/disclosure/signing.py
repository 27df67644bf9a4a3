"""The agency's disclosure key: OpenSSH signatures (``ssh-keygen -Y``) over a bag's tag
manifest, which any Debian or macOS machine checks without anything of ours."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bwc_dock.disclosure.records import DisclosureError
from bwc_dock.disclosure.verify_bag import NAMESPACE
from bwc_dock.names import safe_name

_PUBLIC_KEY = re.compile(r"^(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+")


def public_key(signing_key: Path) -> str:
    """``TYPE BASE64`` of the key's public half: its ``.pub`` file, else derived."""
    published = signing_key.with_name(signing_key.name + ".pub")
    if published.is_file():
        text = published.read_text(encoding="utf-8", errors="replace")
    else:
        text = _ssh_keygen(["-y", "-f", str(signing_key)], f"{signing_key}: no public key")
    match = _PUBLIC_KEY.match(text.strip())
    if match is None:
        raise DisclosureError(f"{signing_key}: its public key is not an OpenSSH public key")
    return match.group(0)


def principal(organization: str) -> str:
    """The name the agency's key goes by in an allowed_signers file (no spaces)."""
    return safe_name(organization.encode())


def allowed_signers_line(organization: str, signing_key: Path) -> str:
    """One line of an OpenSSH allowed_signers file naming the agency's key."""
    return f'{principal(organization)} namespaces="{NAMESPACE}" {public_key(signing_key)}\n'


def sign(signing_key: Path, signed: Path) -> Path:
    """Write ``signed``.sig, an ``ssh-keygen -Y sign`` signature; return its path."""
    _ssh_keygen(["-Y", "sign", "-f", str(signing_key), "-n", NAMESPACE, str(signed)],
                f"{signing_key}: cannot sign with it")
    return signed.with_name(signed.name + ".sig")


def _ssh_keygen(arguments: list[str], failure: str) -> str:
    try:
        done = subprocess.run(["ssh-keygen", *arguments], capture_output=True, text=True,
                              check=False, stdin=subprocess.DEVNULL, timeout=120)
    except FileNotFoundError as error:
        raise DisclosureError("ssh-keygen is not installed (Debian: openssh-client)") from error
    except subprocess.TimeoutExpired as error:
        raise DisclosureError(f"{failure}: ssh-keygen did not finish") from error
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DisclosureError(f"{failure}: {last}")
    return done.stdout
