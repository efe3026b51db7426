"""Certificates and keys for the test control plane: a CA, the apiserver's serving cert, an
admin client cert (system:masters) and the service-account signing key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

#: Room for 65k Services (`parley bench operator` makes about a thousand).
SERVICE_CIDR = "10.96.0.0/16"

_DAY = datetime.timedelta(days=1)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


@dataclass
class PKI:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def generate(self) -> PKI:
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = _key()
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("parley-test-ca"))
            .issuer_name(_name("parley-test-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 365 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        _write_key(ca_key, self.ca_key)

        def issue(
            name: x509.Name,
            san: list[x509.GeneralName] | None,
            usage: list[x509.ObjectIdentifier],
            cert: Path,
            key_path: Path,
        ) -> None:
            key = _key()
            builder = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(ca.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _DAY)
                .not_valid_after(now + 365 * _DAY)
                .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            )
            if san:
                builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            cert.write_bytes(
                builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
            )
            _write_key(key, key_path)

        server_auth = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        client_auth = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        issue(
            _name("kube-apiserver"),
            [
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(next(ipaddress.ip_network(SERVICE_CIDR).hosts())),  # `kubernetes`
            ],
            [server_auth],
            self.serving_cert,
            self.serving_key,
        )
        issue(
            _name("admin", "system:masters"), None, [client_auth], self.admin_cert, self.admin_key
        )
        sa = _key()
        _write_key(sa, self.sa_key)
        self.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return self
