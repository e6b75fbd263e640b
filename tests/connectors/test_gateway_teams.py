"""Bot Framework activities: JWT issuer/audience/expiry (HS256 and RS256), serviceUrl checks."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from connector_fakes import FailingProducer, FakeProducer, settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from connectors.gateway.app import create_app
from processors.records import ChatRequest
from streams.codec import SingleObjectCodec

APP_ID = "8e1b1f4c-2d4f-4c8e-9f3e-1c2b3a4d5e6f"
HS_SECRET = "teams-test-signing-secret-0123456789abcdef"
ISSUER = "https://api.botframework.com"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"


def activity(text="<at>HelpBot</at> how do I add a user?", **extra):
    a = {
        "type": "message", "id": "1700000000123", "timestamp": "2026-11-26T10:00:00.000Z",
        "serviceUrl": SERVICE_URL, "channelId": "msteams",
        "from": {"id": "29:1abc", "name": "Ada", "aadObjectId": "aad-ada"},
        "conversation": {"id": "a:1xyz-conv", "tenantId": "tenant-1", "conversationType": "personal"},
        "recipient": {"id": "28:" + APP_ID, "name": "HelpBot"},
        "text": text, "textFormat": "plain",
    }
    a.update(extra)
    return a


def token(key=HS_SECRET, alg="HS256", **claims):
    body = {"iss": ISSUER, "aud": APP_ID, "exp": int(time.time()) + 300, "nbf": int(time.time()) - 10,
            "serviceurl": SERVICE_URL}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, alg, headers={"kid": "k1"} if alg == "RS256" else None)


def client_for(producer, **overrides):
    s = settings(teams_app_id=APP_ID, teams_jwt_secret=HS_SECRET, **overrides)
    return TestClient(create_app(s, producer, sse_tail=False))


def post(client, act, tok):
    return client.post("/teams/messages", content=json.dumps(act), headers={"Authorization": f"Bearer {tok}",
                                                                          "Content-Type": "application/json"})


def test_valid_activity_becomes_a_turn():
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, activity(), token()).status_code == 200
    req = SingleObjectCodec().decode(producer.sent[0]["value"], ChatRequest)
    assert req.session_id == "teams:a:1xyz-conv" and req.text == "how do I add a user?"
    assert req.metadata["teams_service_url"] == SERVICE_URL
    assert req.metadata["teams_conversation_id"] == "a:1xyz-conv"
    assert req.metadata["teams_activity_id"] == "1700000000123"


@pytest.mark.parametrize("claims,reason", [
    ({"iss": "https://evil.example"}, "bad_issuer"),
    ({"aud": "another-bot"}, "bad_audience"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"exp": None}, "invalid_token:MissingRequiredClaimError"),
])
def test_bad_claims_are_refused(claims, reason):
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, activity(), token(**claims)).status_code == 401
        counters = client.get("/v1/stats").json()["counters"]
    assert counters[f"refused.teams.{reason}"] == 1
    assert producer.sent == []


def test_forged_signature_missing_token_and_none_alg_are_refused():
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, activity(), token(key="forged-secret-0123456789abcdef-012345")).status_code == 401
        assert client.post("/teams/messages", json=activity()).status_code == 401
        unsigned = jwt.encode({"iss": ISSUER, "aud": APP_ID, "exp": int(time.time()) + 60}, None, "none")
        assert post(client, activity(), unsigned).status_code == 401
    assert producer.sent == []


def test_service_url_must_match_token_and_allow_list():
    producer = FakeProducer()
    with client_for(producer) as client:
        evil = activity(serviceUrl="https://attacker.example/")
        assert post(client, evil, token()).status_code == 403  # token says another serviceUrl
        assert post(client, evil, token(serviceurl="https://attacker.example/")).status_code == 403  # not allowed
    assert producer.sent == []


def test_rs256_with_configured_jwks(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    producer = FakeProducer()
    s = settings(teams_app_id=APP_ID, teams_jwks_path=path)
    with TestClient(create_app(s, producer, sse_tail=False)) as client:
        assert post(client, activity(), token(key=pem, alg="RS256")).status_code == 200
        assert post(client, activity(), token(key=other, alg="RS256")).status_code == 401
        # HS256 is not accepted when only RSA keys are configured (no algorithm confusion)
        assert post(client, activity(), token(key=HS_SECRET)).status_code == 401
    assert len(producer.sent) == 1


def test_non_message_activities_are_acknowledged_only():
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, activity(type="conversationUpdate", text=None), token()).status_code == 200
    assert producer.sent == []


def test_kafka_down_is_503():
    with client_for(FailingProducer()) as client:
        assert post(client, activity(), token()).status_code == 503


def test_disabled_without_keys():
    with TestClient(create_app(settings(teams_app_id=APP_ID), FakeProducer(), sse_tail=False)) as client:
        assert post(client, activity(), token()).status_code == 404
