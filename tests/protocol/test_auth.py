"""Token verification: every refusal has its own contract code; the clock is passed in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from livegate.errors import AuthError
from livegate.protocol.auth import TokenVerifier

NOW = 1_800_000_000.0
SECRET = "hs-secret-for-tests-0123456789abcdef"
GOOD = {"sub": "alice", "exp": NOW + 600, "iat": NOW}

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC_PEM = EC_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def code_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, NOW)
    return info.value.code


def unsigned(claims: dict, header: dict) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64(header)}.{b64(claims)}."


def test_hs256_accepted() -> None:
    v = TokenVerifier(hmac_secret=SECRET)
    assert v.verify(jwt.encode(GOOD, SECRET, "HS256"), NOW).sub == "alice"


def test_alg_none_refused() -> None:
    v = TokenVerifier(hmac_secret=SECRET)
    assert code_of(v, unsigned(GOOD, {"alg": "none", "typ": "JWT"})) == "token_algorithm_not_allowed"


def test_bad_signature_and_garbage() -> None:
    v = TokenVerifier(hmac_secret=SECRET)
    assert code_of(v, jwt.encode(GOOD, "another-secret-0123456789abcdef", "HS256")) == "token_signature_invalid"
    assert code_of(v, "not.a.jwt") == "token_malformed"
    assert code_of(v, "garbage") == "token_malformed"


def test_alg_outside_allow_list_refused() -> None:
    v = TokenVerifier(hmac_secret=SECRET, algorithms=("HS256",))
    assert code_of(v, jwt.encode(GOOD, SECRET, "HS512")) == "token_algorithm_not_allowed"


def test_rs256_and_key_confusion() -> None:
    v = TokenVerifier(algorithms=("RS256",), public_key=RSA_PUBLIC_PEM)
    assert v.verify(jwt.encode(GOOD, RSA_KEY, "RS256"), NOW).sub == "alice"
    # The classic attack: HMAC-sign with the *public key* as the secret.
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = unsigned(GOOD, header)[:-1].encode()
    sig = base64.urlsafe_b64encode(hmac.new(RSA_PUBLIC_PEM.encode(), signing_input, hashlib.sha256).digest())
    forged = signing_input.decode() + "." + sig.decode().rstrip("=")
    assert code_of(v, forged) == "token_algorithm_not_allowed"
    # Even with HS256 allowed, an HMAC token is checked against the HMAC secret, never the PEM.
    v2 = TokenVerifier(algorithms=("RS256", "HS256"), public_key=RSA_PUBLIC_PEM, hmac_secret=SECRET)
    assert code_of(v2, forged) == "token_signature_invalid"


def test_es256_and_jwks() -> None:
    v = TokenVerifier(algorithms=("ES256",), public_key=EC_PUBLIC_PEM)
    assert v.verify(jwt.encode(GOOD, EC_KEY, "ES256"), NOW).sub == "alice"
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    vj = TokenVerifier(algorithms=("RS256",), jwks=jwt.PyJWKSet.from_dict({"keys": [jwk]}))
    assert vj.verify(jwt.encode(GOOD, RSA_KEY, "RS256", headers={"kid": "k1"}), NOW).sub == "alice"
    assert code_of(vj, jwt.encode(GOOD, RSA_KEY, "RS256", headers={"kid": "nope"})) == "token_signature_invalid"


@pytest.mark.parametrize(
    "claims, code",
    [
        ({**GOOD, "exp": NOW - 1}, "token_expired"),
        ({**GOOD, "nbf": NOW + 120}, "token_not_yet_valid"),
        ({**GOOD, "iat": NOW + 3600}, "token_not_yet_valid"),
        ({k: v for k, v in GOOD.items() if k != "sub"}, "token_subject_missing"),
        ({k: v for k, v in GOOD.items() if k != "exp"}, "token_malformed"),
    ],
)
def test_time_and_subject_claims(claims: dict, code: str) -> None:
    assert code_of(TokenVerifier(hmac_secret=SECRET), jwt.encode(claims, SECRET, "HS256")) == code


def test_issuer_and_audience_when_configured() -> None:
    v = TokenVerifier(hmac_secret=SECRET, issuer="https://id.example", audience="livegate")
    ok = {**GOOD, "iss": "https://id.example", "aud": "livegate"}
    assert v.verify(jwt.encode(ok, SECRET, "HS256"), NOW).sub == "alice"
    assert code_of(v, jwt.encode({**ok, "iss": "https://evil"}, SECRET, "HS256")) == "token_issuer_invalid"
    assert code_of(v, jwt.encode({**ok, "aud": "other"}, SECRET, "HS256")) == "token_audience_invalid"
    assert code_of(v, jwt.encode(GOOD, SECRET, "HS256")) in {"token_issuer_invalid", "token_audience_invalid"}


def test_clock_is_an_input() -> None:
    v = TokenVerifier(hmac_secret=SECRET)
    token = jwt.encode(GOOD, SECRET, "HS256")
    assert v.verify(token, NOW + 599).sub == "alice"
    with pytest.raises(AuthError):
        v.verify(token, NOW + 600)
