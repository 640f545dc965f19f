"""Keys of SendGrid's signed event webhook (ECDSA P-256 over timestamp + raw body).

Production verifies with SENDGRID_EVENT_PUBLIC_KEY (base64 DER, as SendGrid shows it, or
PEM). Test mode without a configured key uses a key pair derived from SECRET_KEY, so the
simulator (in a worker) and the webhook (in the web process) agree with nothing to set up
and no private key in the source tree.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

# Order of the P-256 group: a derived private value must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@functools.cache
def _test_private_key(secret_key: str) -> ec.EllipticCurvePrivateKey:
    seed = int.from_bytes(hashlib.sha256(f"sendgrid-event-simulator:{secret_key}".encode()).digest(), "big")
    return ec.derive_private_key(seed % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def test_private_key() -> ec.EllipticCurvePrivateKey:
    return _test_private_key(settings.SECRET_KEY)


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The form SendGrid shows in its settings: base64 of the DER SubjectPublicKeyInfo."""
    return public_key_b64_of(private_key.public_key())


def public_key_b64_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """A public key in SendGrid's form (what anymail's verification key setting takes)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@functools.cache
def _load(value: str) -> ec.EllipticCurvePublicKey | None:
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except ValueError:
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def verification_key() -> ec.EllipticCurvePublicKey | None:
    """The configured public key; the derived test key in test mode; None (refuse all) otherwise."""
    if settings.SENDGRID_EVENT_PUBLIC_KEY:
        return _load(settings.SENDGRID_EVENT_PUBLIC_KEY)
    if settings.TEST_MODE:
        return test_private_key().public_key()
    return None


def sign(private_key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """What SendGrid sends in X-Twilio-Email-Event-Webhook-Signature."""
    return base64.b64encode(private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
