"""The connection state machine, without sockets: frames and the clock go in, effects out."""

from __future__ import annotations

import json

import jwt
import pytest

from livegate.protocol import codec, messages
from livegate.protocol.auth import TokenVerifier, mint_token
from livegate.protocol.session import (
    Authenticate,
    CancelGeneration,
    Close,
    Send,
    Session,
    SessionLimits,
    State,
)
from livegate.testing.spec_validation import assert_valid_message

SECRET = "unit-test-secret-0123456789abcdef"
NOW = 1_800_000_000.0


def make_session(**limits: float) -> Session:
    return Session(TokenVerifier(hmac_secret=SECRET), SessionLimits(**limits), "c-test", now=NOW)  # type: ignore[arg-type]


def token(sub: str = "alice", ttl: float = 600, now: float = NOW) -> str:
    return mint_token(SECRET, sub, ttl_seconds=ttl, now=now)


def frames(effects: list) -> list[dict]:
    """Encode every Send as the wire would, checking it against asyncapi.yaml."""
    out = []
    for e in effects:
        if isinstance(e, Send):
            out.append(assert_valid_message(codec.encode(e.message)))
    return out


def closes(effects: list) -> list[int]:
    return [e.code for e in effects if isinstance(e, Close)]


def open_session(**limits: float) -> Session:
    s = make_session(**limits)
    effects = s.receive_text(json.dumps({"type": "auth", "id": "a1", "token": token()}), NOW)
    assert isinstance(effects[0], Authenticate)
    welcome = frames(s.accept(epoch="e1", offset=7, recovered=None, request_id="a1"))
    assert welcome[0]["type"] == "welcome" and welcome[0]["offset"] == 7 and "recovered" not in welcome[0]
    assert s.state is State.OPEN
    return s


def test_auth_then_welcome_carries_expiry_and_position() -> None:
    s = make_session()
    effects = s.receive_text(json.dumps({"type": "auth", "token": token(), "resume": {"epoch": "e1", "offset": 3}}), NOW)
    (auth,) = effects
    assert isinstance(auth, Authenticate) and auth.claims.sub == "alice"
    assert auth.resume == messages.StreamPosition(epoch="e1", offset=3)
    (welcome,) = frames(s.accept(epoch="e1", offset=9, recovered=True, request_id=None))
    assert welcome["recovered"] is True and welcome["userId"] == "alice"
    assert welcome["expiresAt"].startswith("2027-01-15T08:")  # NOW + 600 s


@pytest.mark.parametrize(
    "frame, code",
    [
        ('{"type":"ping"}', "not_authenticated"),
        ("not json", "not_authenticated"),
        ('{"type":"auth"}', "not_authenticated"),
        ('{"type":"auth","token":"abc"}', "token_malformed"),
    ],
)
def test_anything_but_a_valid_auth_first_is_fatal(frame: str, code: str) -> None:
    s = make_session()
    effects = s.receive_text(frame, NOW)
    (error,) = frames(effects)
    assert error["code"] == code and error["fatal"] is True
    assert closes(effects) == [4400 if code == "not_authenticated" else 4401]
    assert s.state is State.CLOSED
    assert s.receive_text('{"type":"ping"}', NOW) == []


def test_auth_timeout_closes_with_4005() -> None:
    s = make_session(auth_timeout=5.0)
    assert s.next_deadline() == NOW + 5
    assert s.on_timer(NOW + 4.9) == []
    effects = s.on_timer(NOW + 5)
    assert frames(effects)[0]["code"] == "auth_timeout" and closes(effects) == [4005]


@pytest.mark.parametrize(
    "claims, code",
    [
        ({"sub": "a", "exp": NOW - 1}, "token_expired"),
        ({"sub": "a", "exp": NOW + 60, "nbf": NOW + 30}, "token_not_yet_valid"),
        ({"exp": NOW + 60}, "token_subject_missing"),
        ({"sub": "", "exp": NOW + 60}, "token_subject_missing"),
    ],
)
def test_refused_claims_have_distinct_codes(claims: dict, code: str) -> None:
    s = make_session()
    effects = s.receive_text(json.dumps({"type": "auth", "token": jwt.encode(claims, SECRET, "HS256")}), NOW)
    assert frames(effects)[0]["code"] == code
    assert closes(effects) == [4402 if code == "token_expired" else 4401]


def test_ping_pong_echoes_id() -> None:
    s = open_session()
    (pong,) = frames(s.receive_text('{"type":"ping","id":"p9"}', NOW + 1))
    assert pong == {"type": "pong", "id": "p9", "serverTime": pong["serverTime"]}


def test_bad_frames_when_open_are_answered_and_connection_stays() -> None:
    s = open_session()
    cases = {
        "{oops": ("bad_json", None),
        '{"type":"nope"}': ("unknown_type", "$.type"),
        '{"type":"refresh","token":5,"id":"r1"}': ("invalid_message", "$.token"),
        '{"type":"auth","token":"x","id":"a2"}': ("already_authenticated", None),
        "[1,2]": ("invalid_message", "$"),
    }
    for frame, (code, path) in cases.items():
        effects = s.receive_text(frame, NOW + 1)
        (error,) = frames(effects)
        assert error["code"] == code, frame
        assert error.get("path") == path, frame
        assert closes(effects) == []
    assert frames(s.receive_text('{"type":"refresh","token":5,"id":"r1"}', NOW + 1))[0]["id"] == "r1"
    assert frames(s.receive_binary(10, NOW + 1))[0]["code"] == "binary_frame"
    assert s.state is State.OPEN


def test_oversized_frame_is_fatal() -> None:
    s = open_session(max_frame_bytes=400)
    effects = s.receive_text('{"type":"ping","id":"' + "x" * 500 + '"}', NOW)
    assert frames(effects)[0]["code"] == "frame_too_large" and closes(effects) == [4400]


def test_token_expiring_then_refresh_extends_then_expiry_closes() -> None:
    s = open_session(token_expiring_lead=60, token_grace=5)
    exp = s.claims.exp  # type: ignore[union-attr]
    assert s.next_deadline() == exp - 60
    (warning,) = frames(s.on_timer(exp - 60))
    assert warning["type"] == "tokenExpiring" and warning["secondsLeft"] == pytest.approx(60)
    assert s.on_timer(exp - 30) == []  # warned once per token
    later = token(ttl=3600, now=exp - 30)
    (refreshed,) = frames(s.receive_text(json.dumps({"type": "refresh", "id": "r", "token": later}), exp - 30))
    assert refreshed["type"] == "refreshed" and s.claims.exp == pytest.approx(exp - 30 + 3600)  # type: ignore[union-attr]
    new_exp = s.claims.exp  # type: ignore[union-attr]
    assert frames(s.on_timer(new_exp - 60))[0]["type"] == "tokenExpiring"
    effects = s.on_timer(new_exp + 5)
    assert frames(effects)[0]["code"] == "token_expired" and closes(effects) == [4402]


def test_refresh_for_another_user_is_refused_and_closes() -> None:
    s = open_session()
    effects = s.receive_text(json.dumps({"type": "refresh", "token": token("mallory")}), NOW + 1)
    assert frames(effects)[0]["code"] == "token_subject_mismatch" and closes(effects) == [4401]


def test_rate_limit_drops_then_closes_when_sustained() -> None:
    s = open_session(rate_per_second=1, rate_burst=3)
    codes = [frames(s.receive_text('{"type":"ping"}', NOW + 1))[0].get("code") for _ in range(3)]
    assert codes == [None, None, None]  # the burst
    effects = s.receive_text('{"type":"ping"}', NOW + 1)
    assert frames(effects)[0]["code"] == "rate_limited" and closes(effects) == []
    for _ in range(3):
        effects = s.receive_text('{"type":"ping"}', NOW + 1)
    assert closes(effects) == [4004]


def test_rate_limit_refills_with_time() -> None:
    s = open_session(rate_per_second=10, rate_burst=2)
    for _ in range(2):
        s.receive_text('{"type":"ping"}', NOW)
    assert frames(s.receive_text('{"type":"ping"}', NOW))[0]["code"] == "rate_limited"
    assert frames(s.receive_text('{"type":"ping"}', NOW + 0.2))[0]["type"] == "pong"


def test_cancel_is_an_effect_for_the_io_layer_and_its_answers_are_contract_frames() -> None:
    """asyncapi.yaml ``sendCancel``: the core names the user (from the token, never from the
    frame) and the I/O layer answers through ``cancel_answered`` / ``cancel_refused``."""
    early = make_session()
    refused = early.receive_text(json.dumps({"type": "cancel", "id": "c0", "generationId": "gen_1"}), NOW)
    assert frames(refused)[0]["code"] == "not_authenticated" and closes(refused) == [4400]

    s = open_session()
    (effect,) = s.receive_text(json.dumps({"type": "cancel", "id": "c1", "generationId": "gen_1"}), NOW)
    assert effect == CancelGeneration(user_id="alice", generation_id="gen_1", request_id="c1")
    (answer,) = frames(s.cancel_answered("c1", "gen_1", "cancelled"))
    assert answer == {"type": "cancelResult", "id": "c1", "generationId": "gen_1", "status": "cancelled"}
    (error,) = frames(s.cancel_refused("c2", "illegal_transition", "A completed generation cannot be cancelled"))
    assert (error["id"], error["code"], error["fatal"]) == ("c2", "illegal_transition", False)
    assert s.state is State.OPEN
    (invalid,) = frames(s.receive_text(json.dumps({"type": "cancel", "id": "c3", "generationId": ""}), NOW))
    assert (invalid["code"], invalid["id"], invalid["path"]) == ("invalid_message", "c3", "$.generationId")
