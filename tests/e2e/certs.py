"""Test certificates made with the ``openssl`` command: a CA, and leaf certificates it signs
(server ones for an IP address, client ones), all in one folder. Nothing leaves the machine."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .harness import HarnessError

INSTALL_HINT = (
    "openssl (Debian package openssl) is required by the TLS tests; `make test` installs it"
)


@dataclass(frozen=True, slots=True)
class Leaf:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise HarnessError(INSTALL_HINT)
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise HarnessError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def make_ca(folder: Path, name: str = "siplb-test-ca") -> Leaf:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return Leaf(cert, key)


def make_leaf(folder: Path, ca: Leaf, name: str, *, ip: str | None = None) -> Leaf:
    """A certificate signed by ``ca``: for a server at ``ip`` (subjectAltName), else a client."""
    cert, key, csr = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    ext = folder / f"{name}.ext"
    usage = "serverAuth" if ip is not None else "clientAuth"
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
    if ip is not None:
        lines.append(f"subjectAltName=IP:{ip}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    return Leaf(cert, key)
