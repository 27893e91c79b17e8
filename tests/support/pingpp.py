"""Ping++'s side of things as the tests play it: RSA keys, signed webhook events, and a gateway
whose calls a test can script."""

import base64
import functools
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def new_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def sign(private_key, raw):
    """Ping++'s webhook signature: RSA-SHA256, PKCS#1 v1.5, base64."""
    return base64.b64encode(private_key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()


def event(event_type, obj, event_id=None):
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "livemode": False,
        "type": event_type,
        "created": 1466652398,
        "data": {"object": obj},
    }


class Scripted:
    """The real gateway (speaking to the sandbox), except the calls a test scripts: scripts[name](real
    call, *args) runs instead, e.g. makes the call at Ping++ and then loses its answer, or lets
    something else happen at Ping++ while the call is in flight."""

    def __init__(self, real, **scripts):
        self._real, self._scripts = real, scripts

    def __getattr__(self, name):
        call = getattr(self._real, name)
        script = self._scripts.get(name)
        return call if script is None else functools.partial(script, call)
