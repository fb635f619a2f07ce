"""Which ssh cipher a node prefers for its pulls and notices, chosen from its own CPU.

Measured on the lab (bench/RESULTS.md): with AES in hardware (x86 `aes`, arm64 `aes`), AES-GCM moves
a stream faster than ChaCha20-Poly1305, OpenSSH's default first choice; without it ChaCha20 is the
faster one. Both are AEAD ciphers: each carries its own MAC, so the MAC list does not matter for them.

The choice is a preference put at the head of OpenSSH's default list (`Ciphers=^...`, OpenSSH 8.2 and
later): a peer whose sshd allows neither still gets one of the defaults it allows.
"""

from __future__ import annotations

import re

AES_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
CHACHA = ("chacha20-poly1305@openssh.com",)
CIPHER_RE = re.compile(r"[a-z0-9][a-z0-9@.-]{2,63}")


def hardware_aes(cpuinfo: str) -> bool:
    """Does /proc/cpuinfo show AES instructions (x86 `flags`, arm64 `Features`) on every CPU it lists?"""
    found = False
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() in ("flags", "features"):
            if "aes" not in value.split():
                return False
            found = True
    return found


def preferred(aes_in_hardware: bool) -> tuple[str, ...]:
    return (*AES_GCM, *CHACHA) if aes_in_hardware else (*CHACHA, *AES_GCM)


def check(ciphers: tuple[str, ...] | list[str]) -> str | None:
    """Why a configured cipher list is not one (None when it is)."""
    for cipher in ciphers:
        if not isinstance(cipher, str) or not CIPHER_RE.fullmatch(cipher):
            return f"ssh_ciphers: {cipher!r} is not an ssh cipher name (e.g. aes128-gcm@openssh.com)"
    if len(set(ciphers)) != len(ciphers):
        return "ssh_ciphers: a cipher is named twice"
    return None


def ssh_option(ciphers: tuple[str, ...] | list[str]) -> list[str]:
    """ssh's option that puts the ciphers at the head of its default list (none: ssh's own order)."""
    return ["-o", "Ciphers=^" + ",".join(ciphers)] if ciphers else []
