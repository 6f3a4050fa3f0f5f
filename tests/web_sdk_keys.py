"""RSA and EC keys (PEM) for the Web SDK token tests, generated once per test run."""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def rsa_private_pem(bits: int = 2048) -> str:
    """One RSA key per size for the whole run (PEM, PKCS#8, unencrypted)."""
    return _rsa_private_pem(bits)


@functools.cache
def _rsa_private_pem(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def rsa_public_pem(bits: int = 2048) -> str:
    key = serialization.load_pem_private_key(rsa_private_pem(bits).encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@functools.cache
def encrypted_rsa_pem() -> str:
    key = serialization.load_pem_private_key(rsa_private_pem().encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode("ascii")


@functools.cache
def ec_private_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
