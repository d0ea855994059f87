"""This host's TLS key and self-signed certificate for ``cumulod --listen``.

Made on the first start in the state dir (the key mode 0600, root's only) and kept:
clients pin the certificate's sha256 (trust on first use, like SSH), so a new one
would be refused by every remote that knows this host. The one module that imports
``cryptography``.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cumulo.errors import CumuloError

KEY, CERT = "server.key", "server.crt"
VALID = datetime.timedelta(days=3650)


def fingerprint(cert_pem: bytes) -> str:
    """The sha256 of the certificate's DER form (what clients pin), 64 hex digits."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem.decode())).hexdigest()


def _make(key_path: Path, cert_path: Path, host: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname()[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cumulod")])
    sans: list[x509.GeneralName] = [x509.DNSName(socket.gethostname()),
                                    x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        if host:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure(tls_dir: Path, host: str) -> tuple[Path, Path, str]:
    """The key and certificate in ``tls_dir`` (made now if missing), and the
    certificate's fingerprint."""
    key_path, cert_path = tls_dir / KEY, tls_dir / CERT
    try:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not key_path.exists():
            cert_path.unlink(missing_ok=True)
            _make(key_path, cert_path, host)
        if key_path.stat().st_mode & 0o077:
            raise CumuloError(f"{key_path} is readable by others: chmod 600 it, or remove"
                              " it (and the certificate) for a new pair")
        return key_path, cert_path, fingerprint(cert_path.read_bytes())
    except (OSError, ValueError) as err:
        raise CumuloError(f"cannot make or read the TLS key in {tls_dir}: {err}") from err


def server_context(key_path: Path, cert_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
