#!/usr/bin/env python3
"""Writes core/tests/vectors/algorithm-vectors.json: every algorithm a key can be pinned
to (HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384, EdDSA), each with a valid
token, a tampered one and one signed by another key, plus the signature forms a verifier
must refuse (PKCS#1 v1.5 under a PSS key, DER instead of raw ECDSA, a PSS salt of the
wrong length). Same format as decision-vectors.json, so every edge runs it with the same
code; keys come as PEM (SubjectPublicKeyInfo and PKCS#1), JWK and base64url secrets.

Tokens are signed by OpenSSL (`openssl dgst` / `openssl pkeyutl`), never by this
project's code; only the Python standard library and the `openssl` command are needed.
The keys are the throwaway ones in tests/fixtures. PSS and ECDSA signatures are random,
so each run writes different (equally valid) tokens: run it only to change the cases.

    python3 scripts/algorithm-vectors.py
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "core", "tests", "vectors", "algorithm-vectors.json")
NOW_S = 1_800_000_000
CONFIG = {
    "issuer": "https://idp.example.test",
    "audiences": ["portal"],
    "clock_skew_s": 60,
    "default_tenant": "default",
    "max_token_bytes": 8192,
    "clock_margin_s": 0,
    "claims": {
        "user": "sub",
        "tenant": "tid",
        "session": "sid",
        "issued_at": "iat",
        "session_start": "auth_time",
    },
}
SECRETS = {
    "HS256": b"algorithm-vectors-hs256-secret-0123456789",
    "HS384": b"algorithm-vectors-hs384-secret-0123456789abcdefghijklmn",
    "HS512": b"algorithm-vectors-hs512-secret-0123456789abcdefghijklmnopqrstuvwxyz0123",
}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fixture(name):
    return os.path.join(FIXTURES, name)


def openssl(*args, data=b""):
    return subprocess.run(
        ["openssl", *args], input=data, capture_output=True, check=True
    ).stdout


def der_integers(der):
    """The INTEGERs of a DER SEQUENCE (an ECDSA signature, an RSAPublicKey)."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = []
    while i < len(der):
        assert der[i] == 0x02
        n = der[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(der[i : i + k], "big")
            i += k
        out.append(int.from_bytes(der[i : i + n], "big"))
        i += n
    return out


def sign(alg, key, data):
    """The JWS signature of `data` under `alg` with the private key file `key` (or an
    HMAC secret)."""
    bits = alg[2:] if alg != "EdDSA" else ""
    if alg.startswith("HS"):
        return hmac.new(key, data, getattr(hashlib, "sha" + bits)).digest()
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        if alg == "EdDSA":
            return openssl("pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", f.name)
        args = ["dgst", "-sha" + bits, "-sign", key]
        if alg.startswith("PS"):
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        sig = openssl(*args, f.name)
    if alg.startswith("ES"):
        size = 32 if alg == "ES256" else 48
        r, s = der_integers(sig)
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return sig


def token(alg, kid, key, claims, header_alg=None):
    header = {"alg": header_alg or alg, "kid": kid, "typ": "JWT"}
    signing_input = (
        b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + b64(sign(alg, key, signing_input.encode()))


def public_pem(private):
    return openssl("pkey", "-in", private, "-pubout").decode()


def rsa_numbers(private):
    text = openssl("rsa", "-in", private, "-pubout", "-RSAPublicKey_out", "-outform", "DER")
    n, e = der_integers(text)
    return n, e


def jwk_rsa(private):
    n, e = rsa_numbers(private)
    return {
        "kty": "RSA",
        "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    }


def jwk_ec(private, crv, size):
    der = openssl("pkey", "-in", private, "-pubout", "-outform", "DER")
    point = der[-(2 * size + 1) :]
    assert point[0] == 4
    return {"kty": "EC", "crv": crv, "x": b64(point[1 : size + 1]), "y": b64(point[size + 1 :])}


def claims(user):
    return {
        "iss": CONFIG["issuer"],
        "aud": "portal",
        "sub": user,
        "tid": "acme",
        "sid": "s-" + user,
        "iat": NOW_S - 600,
        "exp": NOW_S + 3000,
    }


def tamper(tok):
    h, p, s = tok.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload["sub"] = "1"
    return ".".join([h, b64(json.dumps(payload, separators=(",", ":")).encode()), s])


def main():
    rsa_a, rsa_b = fixture("rs256-a.pem"), fixture("rs256-b.pem")
    pkcs1 = openssl("rsa", "-in", rsa_a, "-pubout", "-RSAPublicKey_out").decode()
    # (alg, kid, the key as configured, private key, another private key of the kind)
    setups = [
        ("HS256", "hs256", {"secret_b64url": b64(SECRETS["HS256"])}, SECRETS["HS256"], b"x" * 40),
        ("HS384", "hs384", {"secret_b64url": b64(SECRETS["HS384"])}, SECRETS["HS384"], b"y" * 56),
        ("HS512", "hs512", {"jwk": {"kty": "oct", "k": b64(SECRETS["HS512"])}}, SECRETS["HS512"], b"z" * 72),
        ("RS256", "rs256", {"public_key_pem": public_pem(rsa_a)}, rsa_a, rsa_b),
        ("RS384", "rs384", {"jwk": jwk_rsa(rsa_a)}, rsa_a, rsa_b),
        ("RS512", "rs512", {"public_key_pem": pkcs1}, rsa_a, rsa_b),
        ("PS256", "ps256", {"public_key_pem": public_pem(rsa_a)}, rsa_a, rsa_b),
        ("PS384", "ps384", {"jwk": jwk_rsa(rsa_a)}, rsa_a, rsa_b),
        ("PS512", "ps512", {"public_key_pem": pkcs1}, rsa_a, rsa_b),
        ("ES256", "es256", {"public_key_pem": public_pem(fixture("es256-a.pem"))}, fixture("es256-a.pem"), fixture("es256-b.pem")),
        ("ES384", "es384", {"jwk": jwk_ec(fixture("es384-a.pem"), "P-384", 48)}, fixture("es384-a.pem"), fixture("es384-b.pem")),
        ("EdDSA", "eddsa", {"public_key_pem": public_pem(fixture("ed25519-a.pem"))}, fixture("ed25519-a.pem"), fixture("ed25519-b.pem")),
    ]
    keys, cases = [], []
    allow = lambda user: {"allow": True, "reason": None, "user": user, "tenant": "acme", "session": "s-" + user}
    deny = {"allow": False, "reason": "invalid_token", "user": None, "tenant": None, "session": None}

    def case(name, why, tok, expect):
        state = {"global_ms": None, "tenants": [], "users": [], "sessions": []}
        cases.append({"name": name, "why": why, "token": tok, "now_ms": NOW_S * 1000, "state": state, "expect": expect})

    for alg, kid, material, private, other in setups:
        keys.append({"kid": kid, "alg": alg, **material})
        user = "u-" + kid
        valid = token(alg, kid, private, claims(user))
        case(f"valid_{kid}", f"a valid {alg} token passes", valid, allow(user))
        case(f"tampered_{kid}", f"an {alg} token whose payload changed after signing is refused", tamper(valid), deny)
        case(f"other_key_{kid}", f"an {alg} token signed by another key is refused", token(alg, kid, other, claims(user)), deny)
    # Signature forms a careful verifier refuses.
    case(
        "pkcs1_signature_under_ps256_key",
        "a PKCS#1 v1.5 signature does not pass as PSS",
        token("RS256", "ps256", rsa_a, claims("u-ps256"), header_alg="PS256"),
        deny,
    )
    case(
        "pss_signature_under_rs256_key",
        "a PSS signature does not pass as PKCS#1 v1.5",
        token("PS256", "rs256", rsa_a, claims("u-rs256"), header_alg="RS256"),
        deny,
    )
    der_es256 = token("ES256", "es256", fixture("es256-a.pem"), claims("u-es256"))
    with tempfile.NamedTemporaryFile() as f:
        h, p, _ = der_es256.split(".")
        f.write((h + "." + p).encode())
        f.flush()
        der = openssl("dgst", "-sha256", "-sign", fixture("es256-a.pem"), f.name)
    case("der_ecdsa_signature", "an ECDSA signature in DER, not JWS's raw r||s, is refused", h + "." + p + "." + b64(der), deny)
    with tempfile.NamedTemporaryFile() as f:
        signing_input = token("PS256", "ps256", rsa_a, claims("u-ps256")).rsplit(".", 1)[0]
        f.write(signing_input.encode())
        f.flush()
        short_salt = openssl(
            "dgst", "-sha256", "-sign", rsa_a, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:20", f.name
        )
    case("pss_salt_not_the_hash_length", "a PS256 signature with a 20-byte salt is refused (RFC 7518: salt = hash length)", signing_input + "." + b64(short_salt), deny)

    doc = {
        "description": "Every algorithm, signed by OpenSSL (scripts/algorithm-vectors.py); same format as decision-vectors.json.",
        "config": CONFIG,
        "keys": keys,
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases, {len(keys)} keys to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
