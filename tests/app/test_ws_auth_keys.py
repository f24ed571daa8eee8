"""Asymmetric tokens end to end: RS256 with a public-key file, ES256 with a JWKS file, and the
key-confusion and wrong-key-type refusals, each with its contract code (over a real socket
where the config files matter, pure otherwise)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from livegate.config import Config
from livegate.errors import AuthError
from livegate.protocol.auth import TokenVerifier
from livegate.testing.gateway import running_gateway

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def claims(sub: str = "alice", ttl: float = 600) -> dict:
    return {"sub": sub, "exp": time.time() + ttl, "iat": int(time.time())}


def hs256_with(secret: str, payload: dict) -> str:
    """An HS256 token signed with ``secret`` by hand (PyJWT refuses PEM text as an HMAC key)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def jwks_file(tmp_path: Path) -> Path:
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_jwk, rsa_jwk]}))
    return path


async def _refusal(probe, token: str) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    await probe.send({"type": "auth", "token": token})
    frames = []
    from websockets.exceptions import ConnectionClosed
    try:
        while True:
            frames.append(await probe.recv())
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return frames[-1]["code"], exc.rcvd.code


async def test_rs256_public_key_file_over_a_socket(tmp_path: Path, connect) -> None:
    key_file = tmp_path / "public.pem"
    key_file.write_text(pem(RSA_KEY))
    async with running_gateway(tmp_path, jwt_secret=None, jwt_algorithms=("RS256",),
                               jwt_public_key_file=str(key_file)) as gw:
        ok = await connect(gw)
        assert (await ok.auth(jwt.encode(claims(), RSA_KEY, "RS256")))["userId"] == "alice"
        cases = [
            (jwt.encode(claims(), OTHER_RSA, "RS256"), ("token_signature_invalid", 4401)),
            # Key confusion: HMAC-signed with the public key text as the secret.
            (hs256_with(pem(RSA_KEY), claims()), ("token_algorithm_not_allowed", 4401)),
            (jwt.encode(claims(), EC_KEY, "ES256"), ("token_algorithm_not_allowed", 4401)),
            (jwt.encode(claims(ttl=-5), RSA_KEY, "RS256"), ("token_expired", 4402)),
        ]
        for token, expected in cases:
            assert await _refusal(await connect(gw), token) == expected


async def test_es256_and_rs256_from_a_jwks_file_over_a_socket(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, jwt_secret=None, jwt_algorithms=("ES256", "RS256"),
                               jwt_jwks_file=str(jwks_file(tmp_path))) as gw:
        for token in (jwt.encode(claims(), EC_KEY, "ES256", headers={"kid": "ec-1"}),
                      jwt.encode(claims(), RSA_KEY, "RS256", headers={"kid": "rsa-1"}),
                      jwt.encode(claims(), RSA_KEY, "RS256")):  # no kid: the first RSA key
            assert (await (await connect(gw)).auth(token))["userId"] == "alice"
        cases = [
            (jwt.encode(claims(), EC_KEY, "ES256", headers={"kid": "nope"}), "token_signature_invalid"),
            # The kid names the EC key but the token says RS256: never verified with a wrong-type key.
            (jwt.encode(claims(), RSA_KEY, "RS256", headers={"kid": "ec-1"}), "token_signature_invalid"),
            (hs256_with(pem(RSA_KEY), claims()), "token_algorithm_not_allowed"),
        ]
        for token, code in cases:
            assert await _refusal(await connect(gw), token) == (code, 4401)
        await (await connect(gw)).auth(jwt.encode(claims("bob"), EC_KEY, "ES256"))  # still serving


def test_from_config_reads_the_key_files(tmp_path: Path) -> None:
    key_file = tmp_path / "ec.pem"
    key_file.write_text(pem(EC_KEY))
    config = Config(jwt_algorithms=("ES256",), jwt_public_key_file=str(key_file), jwt_jwks_file=None)
    verifier = TokenVerifier.from_config(config)
    assert verifier.verify(jwt.encode(claims(), EC_KEY, "ES256"), time.time()).sub == "alice"


@pytest.mark.parametrize("alg_header", ["none", "None", "NONE"])
def test_unsigned_tokens_are_refused_whatever_the_case(alg_header: str) -> None:
    verifier = TokenVerifier(algorithms=("RS256",), public_key=pem(RSA_KEY))
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).decode().rstrip("=")
    head = base64.urlsafe_b64encode(json.dumps({"alg": alg_header}).encode()).decode().rstrip("=")
    with pytest.raises(AuthError) as info:
        verifier.verify(f"{head}.{body}.", time.time())
    assert info.value.code == "token_algorithm_not_allowed"


def test_ec_key_confusion_with_hs256_also_allowed() -> None:
    """With HS256 allowed next to ES256, an HMAC token is checked with the HMAC secret only."""
    verifier = TokenVerifier(algorithms=("ES256", "HS256"), public_key=pem(EC_KEY),
                             hmac_secret="the-real-hmac-secret-0123456789abcdef")
    with pytest.raises(AuthError) as info:
        verifier.verify(hs256_with(pem(EC_KEY), claims()), time.time())
    assert info.value.code == "token_signature_invalid"
    no_secret = TokenVerifier(algorithms=("ES256", "HS256"), public_key=pem(EC_KEY))
    with pytest.raises(AuthError) as info:
        no_secret.verify(hs256_with(pem(EC_KEY), claims()), time.time())
    assert info.value.code == "token_algorithm_not_allowed"


def test_wrong_key_type_is_a_refusal_not_a_crash() -> None:
    """An RS256 token against an EC public key (or a JWKS holding only EC keys)."""
    token = jwt.encode(claims(), RSA_KEY, "RS256")
    with pytest.raises(AuthError) as info:
        TokenVerifier(algorithms=("RS256",), public_key=pem(EC_KEY)).verify(token, time.time())
    assert info.value.code == "token_algorithm_not_allowed"
    ec_only = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    verifier = TokenVerifier(algorithms=("RS256",), jwks=jwt.PyJWKSet.from_dict({"keys": [ec_only]}))
    with pytest.raises(AuthError) as info:
        verifier.verify(token, time.time())
    assert info.value.code == "token_signature_invalid"
