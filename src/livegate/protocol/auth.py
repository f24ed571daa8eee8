"""Token verification (PyJWT), with the clock passed in.

PyJWT checks the signature, algorithm, issuer and audience; we check ``exp``/``nbf``/``iat``
ourselves against ``now`` so that the decision is a pure function of its inputs (tests pass
the clock). Every refusal maps to a distinct ``ErrorCode`` of asyncapi.yaml.

The key is chosen by the token's algorithm *family* (HMAC secret for ``HS*``, public keys for
``RS*``/``ES*``), never by what the token claims beyond the allow-list, so an RS256 public
key can never be used as an HMAC secret (key confusion).

Hostile tokens (asyncapi.yaml ``token_malformed``): a token over :data:`MAX_TOKEN_CHARS`,
a header or claims PyJWT refuses (``kid`` not a string, unknown or malformed ``crit``, a
header that is not an object, nesting deep enough to exhaust ``json``'s recursion) and
non-finite or out-of-range times are all refused with a contract code here, at the
boundary: nothing of PyJWT's exception tree (nor ``ValueError``/``RecursionError``) escapes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import jwt

from livegate.errors import AuthError

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
# JWK ``kty`` per algorithm prefix (RFC 7518): the only key type that can verify it.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"})
#: Longer tokens are refused before any decoding (8 KiB: nginx's default header buffer;
#: real JWTs are a few hundred bytes).
MAX_TOKEN_CHARS = 8192
#: The largest time claim we accept: the end of year 9999 (what ``datetime`` can show).
MAX_TIMESTAMP = 253_402_300_799.0


@dataclass(frozen=True, slots=True)
class Claims:
    """What a session keeps of a verified token: not the whole claims dict (a session lives
    as long as its connection; ~330 bytes each, bench/README.md)."""

    sub: str
    exp: float


@dataclass(frozen=True)
class TokenVerifier:
    algorithms: tuple[str, ...] = ("HS256",)
    hmac_secret: str | None = None
    public_key: Any = None  # PEM text
    jwks: jwt.PyJWKSet | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> TokenVerifier:
        public_key = None
        if config.jwt_public_key_file:
            public_key = Path(config.jwt_public_key_file).read_text()
        jwks = None
        if config.jwt_jwks_file:
            jwks = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwt_jwks_file).read_text()))
        return cls(
            algorithms=tuple(config.jwt_algorithms),
            hmac_secret=config.jwt_secret,
            public_key=public_key,
            jwks=jwks,
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            leeway=config.jwt_leeway_seconds,
        )

    def _key_for(self, header: dict[str, Any]) -> Any:
        alg = header.get("alg")
        if alg in HMAC_ALGORITHMS:
            if not self.hmac_secret:
                raise AuthError("HMAC tokens are not accepted here", code="token_algorithm_not_allowed")
            return self.hmac_secret
        if self.jwks is not None:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise AuthError("The token's 'kid' is not a string", code="token_malformed")
            family = _KEY_TYPES.get(str(alg)[:2])
            for key in self.jwks.keys:
                # A key of another type (an EC key for an RS256 token) can never verify it.
                if (kid is None or key.key_id == kid) and key.key_type == family:
                    return key.key
            raise AuthError(f"No {family} key with kid {kid!r}", code="token_signature_invalid")
        if self.public_key is None:
            raise AuthError("No public key configured for this algorithm", code="token_algorithm_not_allowed")
        return self.public_key

    def verify(self, token: str, now: float) -> Claims:
        """Return the claims of a valid token or raise :class:`AuthError` with its code."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"The token is not a JWT of at most {MAX_TOKEN_CHARS} characters",
                            code="token_malformed")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            # PyJWT's InvalidTokenError for a non-string ``kid`` or an unknown ``crit``;
            # ValueError/RecursionError from base64 or json on hostile segments.
            raise AuthError("The token is not a decodable JWT", code="token_malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or alg not in self.algorithms:
            raise AuthError(f"Algorithm {alg!r} is not allowed", code="token_algorithm_not_allowed")
        key = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                    "require": ["exp"],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError("The token signature does not verify", code="token_signature_invalid") from None
        except jwt.InvalidIssuerError:
            raise AuthError("The token issuer is not accepted", code="token_issuer_invalid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("The token audience is not accepted", code="token_audience_invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            code = {"iss": "token_issuer_invalid", "aud": "token_audience_invalid"}.get(exc.claim, "token_malformed")
            raise AuthError(f"The token has no {exc.claim!r} claim", code=code) from None
        except (jwt.InvalidKeyError, jwt.InvalidAlgorithmError, TypeError, ValueError):
            # TypeError/ValueError: PyJWT refusing a key of the wrong type (e.g. an EC PEM for RS256).
            raise AuthError("The token cannot be verified with our keys", code="token_algorithm_not_allowed") from None
        except jwt.exceptions.InvalidSubjectError:
            raise AuthError("The token's 'sub' is not a string", code="token_subject_missing") from None
        except (jwt.PyJWTError, RecursionError):
            raise AuthError("The token is not a valid JWT", code="token_malformed") from None
        return check_claims(claims, now, self.leeway)


def check_claims(claims: dict[str, Any], now: float, leeway: float = 0.0) -> Claims:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 128:
        raise AuthError("The token has no usable 'sub' claim", code="token_subject_missing")
    exp = claims.get("exp")
    if not _is_time(exp):
        raise AuthError("The token's 'exp' is not a time (a finite number of seconds)", code="token_malformed")
    if exp <= now - leeway:
        raise AuthError("The token expired", code="token_expired")
    for claim in ("nbf", "iat"):
        value = claims.get(claim)
        if value is not None:
            if not _is_time(value):
                raise AuthError(f"The token's {claim!r} is not a time (a finite number of seconds)",
                                code="token_malformed")
            if value > now + leeway + (60 if claim == "iat" else 0):
                raise AuthError(f"The token is not valid before its {claim!r}", code="token_not_yet_valid")
    return Claims(sub=sub, exp=float(exp))


def _is_time(value: Any) -> TypeGuard[float]:
    """A JSON number of seconds that a ``datetime`` can show (not a bool, NaN or 1e400)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and -MAX_TIMESTAMP <= value <= MAX_TIMESTAMP)


def mint_token(
    secret: str | None,
    sub: str,
    *,
    ttl_seconds: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """Sign an HS256 user token (dev tooling and tests)."""
    if not secret:
        raise AuthError("No LIVEGATE_JWT_SECRET configured (set it, or LIVEGATE_DEV=1)", code="token_malformed")
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {"sub": sub, "iat": int(issued), "exp": round(issued + ttl_seconds, 3)}
    if issuer:
        payload["iss"] = issuer
    if audience:
        payload["aud"] = audience
    return jwt.encode(payload, secret, algorithm="HS256")
