"""Mints logout tokens and SETs for the end-to-end tests with PyJWT and cryptography,
a JWT library independent of the code under test.

Reads one JSON request on stdin, answers one JSON object on stdout:

    {"dir": "/tmp/...",                      # where keys are kept between calls
     "keys": ["lab", "rogue"],               # RSA 2048 keys to have (made once per dir)
     "tokens": [
        {"key": "lab", "alg": "RS256", "headers": {"kid": "lab-1", "typ": "secevent+jwt"},
         "claims": {...}},
        {"hmac_with_public_key": "lab", "headers": {...}, "claims": {...}},
        {"unsigned": true, "headers": {...}, "claims": {...}}]}
    -> {"jwks": {"lab": {"kty": "RSA", "n": ..., "e": ..., "alg": "RS256", "use": "sig"}},
        "tokens": ["eyJ...", ...]}

`hmac_with_public_key` is the key-confusion forgery (HS256 keyed with the public key's
PEM) and `unsigned` an `alg: none` token: PyJWT refuses to make either, rightly, so
they are assembled by hand here.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_or_make(directory: str, name: str):
    path = os.path.join(directory, f"pyjwt-{name}.pem")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return key


def by_hand(header: dict, claims: dict, sign) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def main() -> None:
    request = json.load(sys.stdin)
    directory = request["dir"]
    keys = {name: load_or_make(directory, name) for name in request.get("keys", [])}
    jwks = {}
    for name, key in keys.items():
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk.update({"alg": "RS256", "use": "sig"})
        jwks[name] = jwk
    tokens = []
    for t in request.get("tokens", []):
        headers = t.get("headers", {})
        claims = t["claims"]
        if t.get("unsigned"):
            tokens.append(by_hand({"alg": "none", **headers}, claims, lambda _: b""))
        elif "hmac_with_public_key" in t:
            pem = keys[t["hmac_with_public_key"]].public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            tokens.append(
                by_hand(
                    {"alg": "HS256", **headers},
                    claims,
                    lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
                )
            )
        else:
            tokens.append(
                jwt.encode(claims, keys[t["key"]], algorithm=t.get("alg", "RS256"), headers=headers)
            )
    json.dump({"jwks": jwks, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
