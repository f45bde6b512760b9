"""The control plane's keys and certificates, made with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.rig.procs import RigError


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RigError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


@dataclass(frozen=True)
class Pki:
    """A CA, the API server's serving certificate, an admin client certificate, service-account keys.

    `serving_ips` are the addresses, beside loopback, the serving certificate names.
    """

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.root / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.root / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    @classmethod
    def create(cls, root: Path, serving_ips: tuple[str, ...] = ()) -> Pki:
        root.mkdir(parents=True, exist_ok=True)
        pki = cls(root)
        if pki.admin_cert.exists():
            return pki
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=nsq-operator-rig-ca",
            cwd=root,
        )
        names = [f"IP:{ip}" for ip in ("127.0.0.1", *serving_ips)] + [
            f"DNS:{name}"
            for name in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ]
        (root / "serving.ext").write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
        pki._sign("apiserver", "/CN=kube-apiserver", "serving.ext")
        (root / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        # system:masters: the rig's admin, used by the tests and the control plane's own components.
        pki._sign("admin", "/O=system:masters/CN=rig-admin", "client.ext")
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=root)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=root)
        return pki

    def _sign(self, name: str, subject: str, extfile: str) -> None:
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=self.root,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "30",
            "-extfile",
            extfile,
            cwd=self.root,
        )


def ec_ca(directory: Path, name: str) -> None:
    """A self-signed P-256 CA, `name`.pem and `name`.key in `directory` (for nsqd's TLS tests)."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip


def ec_leaf(directory: Path, ca: str, name: str, extensions: str) -> None:
    """A P-256 certificate `name`.pem signed by CA `ca`, with openssl `extensions` (SANs, key usage)."""
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=directory,
    )  # fmt: skip


def nsqd_tls_args(directory: Path) -> list[str]:
    """nsqd flags for TLS with `directory`'s server.pem/key, requiring a client certificate from ca.pem."""
    return [
        f"--tls-cert={directory / 'server.pem'}", f"--tls-key={directory / 'server.key'}",
        f"--tls-root-ca-file={directory / 'ca.pem'}", "--tls-client-auth-policy=require-verify",
        "--tls-required=tcp-https",
    ]  # fmt: skip
