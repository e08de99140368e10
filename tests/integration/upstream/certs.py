"""A throwaway CA and a server certificate signed by it, made with the openssl command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_NAME = "backend.test"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = (
    f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n"
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid,issuer\n"
)


def have_openssl() -> bool:
    """Whether the openssl command is on PATH."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class Certs:
    """Paths of the CA certificate and the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the server certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(directory: Path) -> Certs:
    """A CA, and a certificate for SERVER_NAME and 127.0.0.1 that it signed, in `directory`."""
    _openssl(
        "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=prefix-gateway test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *_EC, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={SERVER_NAME}",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(_SERVER_EXTENSIONS, encoding="utf-8")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
