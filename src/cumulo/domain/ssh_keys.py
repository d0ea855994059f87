"""SSH public keys for an instance's ``/root/.ssh/authorized_keys``: checked, never trusted.

A key is one ``authorized_keys`` line without options: ``TYPE BASE64 [COMMENT]``,
where the base64 blob is the wire-format key whose first field repeats ``TYPE``
(RFC 4253 section 6.6). Anything else (a private key, a fingerprint, a typo) is
refused with a one-line reason before anything is created.
"""

from __future__ import annotations

import base64
import binascii
import struct

from cumulo.errors import InvalidInputError

KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
MAX_KEYS = 8
MAX_LINE = 4096       # a 16384-bit RSA key is about 2.8 kB


def _check_line(line: str) -> str:
    parts = line.split(None, 2)
    if "PRIVATE KEY" in line:
        raise InvalidInputError("that is a private SSH key: give the public one (.pub)")
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidInputError(
            f"not an SSH public key: {line[:40]!r}... (expected 'ssh-ed25519 AAAA... comment'"
            " or another OpenSSH key type)")
    kind, blob = parts[0], parts[1]
    if len(line) > MAX_LINE:
        raise InvalidInputError(f"SSH public key too long ({len(line)} bytes)")
    try:
        raw = base64.b64decode(blob, validate=True)
        (n,) = struct.unpack(">I", raw[:4])
        inner = raw[4:4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        raise InvalidInputError(f"SSH public key of type {kind} has a damaged base64 body")\
            from None
    if inner != kind:
        raise InvalidInputError(f"SSH public key says {kind} but its body is a {inner or '?'}"
                                " key")
    comment = parts[2].strip() if len(parts) > 2 else ""
    if any(c in comment for c in "\r\0"):
        raise InvalidInputError("SSH public key comment holds a control character")
    return f"{kind} {blob}" + (f" {comment}" if comment else "")


def parse_keys(text: str) -> tuple[str, ...]:
    """The keys in ``text`` (one per line; blank and ``#`` lines skipped), normalised."""
    lines = [ln.strip() for ln in text.splitlines()]
    keys = tuple(_check_line(ln) for ln in lines if ln and not ln.startswith("#"))
    if not keys:
        raise InvalidInputError("no SSH public key given")
    if len(keys) > MAX_KEYS:
        raise InvalidInputError(f"at most {MAX_KEYS} SSH public keys per instance")
    return keys
