"""R16 campus single sign-on through the OpenID Connect provider interface, against the local
stand-in provider (`ykt sim idp`) served on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from cryptography.hazmat.primitives import serialization

from sim.errors import SimError
from sim.idp import create_idp
from sim.wallet_business_cli import sso_login
from sync.crypto import SigningKey
from sync.errors import ConfigError
from sync.server.sso import OidcProvider, SsoError, check_algorithms
from tests.helpers import free_port, wait_until
from tests.live import Live, open_live

SECRET = "s3cret-for-tests"
#: a client secret long enough to be an HS256 key (sync.server.sso.MIN_SECRET)
LONG_SECRET = "s3cret-for-tests-long-enough-for-hs256"
#: the stand-in provider's signing key (its JWKS publishes the public half as "standin-1")
KEY = SigningKey.generate()


@pytest.fixture
def idp() -> Iterator[str]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    app = create_idp(issuer, "ykt", SECRET, users={"S2023002", "C1", "S9"}, key=KEY)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_until(lambda: server.started, 10)
    yield issuer
    server.should_exit = True
    t.join(10)


@pytest.fixture
def sso_live(tmp_path: Path, idp: str) -> Iterator[Live]:
    s = open_live(tmp_path / "live", sso_issuer=idp, sso_client_id="ykt", sso_client_secret=SECRET)
    yield s
    s.stop()


def test_r16_student_signs_in_by_single_sign_on(sso_live: Live) -> None:
    sso_live.add_account("S2023002", 2, topup_fen=100)
    w = sso_login(sso_live.url, "S2023002", "http://127.0.0.1/cb")
    assert w.account["number"] == "S2023002"
    assert w.call("GET", "/v1/app/me")["balance_fen"] == 100


def test_r16_single_sign_on_is_for_students_and_staff_only(sso_live: Live) -> None:
    sso_live.add_account("C1", 3, kind="consumer")
    with pytest.raises(SimError, match="sso_not_allowed"):
        sso_login(sso_live.url, "C1", "http://127.0.0.1/cb")


def test_sso_state_is_single_use_and_unknown_users_are_refused(sso_live: Live) -> None:
    sso_live.add_account("S9", 4)
    with pytest.raises(SimError, match="did not sign in"):
        sso_login(sso_live.url, "S404", "http://127.0.0.1/cb")  # the provider does not know them
    start = sso_live.call(
        "GET", "/v1/app/sso/start", params={"redirect_uri": "http://127.0.0.1/cb"}
    ).json()
    loc = requests.get(
        start["authorization_url"] + "&login_hint=S9", allow_redirects=False, timeout=5
    ).headers["location"]
    code = loc.split("code=")[1].split("&")[0]
    body = {"state": start["state"], "code": code}
    assert sso_live.call("POST", "/v1/app/sso/finish", body).status_code == 200
    again = sso_live.call("POST", "/v1/app/sso/finish", body)
    assert again.status_code == 401 and again.json()["error"]["code"] == "sso_failed"


def test_sso_not_configured_is_a_clear_404(live: Live) -> None:
    r = live.call("GET", "/v1/app/sso/start", params={"redirect_uri": "http://127.0.0.1/cb"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_sso"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(
    idp: str,
    alg: str,
    key: SigningKey | bytes | None = None,
    *,
    head: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """An ID token: ``key`` a SigningKey (EdDSA), bytes (an HMAC key), None (the client
    secret as the HMAC key); the claims of a good token unless overridden (None: left out)."""
    now = int(time.time())
    base = {"iss": idp, "aud": "ykt", "sub": "s-1", "iat": now, "exp": now + 60, "nonce": "n"}
    body = {k: v for k, v in {**base, **claims}.items() if v is not None}
    signed = (
        b64(json.dumps({"alg": alg, "kid": "standin-1", **(head or {})}).encode())
        + "."
        + b64(json.dumps(body).encode())
    )
    if isinstance(key, SigningKey):
        sig = key.sign(signed.encode())
    else:
        secret = LONG_SECRET.encode() if key is None else key
        sig = hmac.new(secret, signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64(sig)


def test_id_tokens_with_another_key_issuer_audience_or_expired_are_refused(idp: str) -> None:
    now = int(time.time() * 1000)
    hs = OidcProvider(idp, "ykt", LONG_SECRET, algorithms=("HS256",))  # pinned to the secret
    assert hs.verify(token(idp, "HS256"), now)["aud"] == "ykt"  # the well-formed one passes
    for bad, why in (
        (token(idp, "HS256", iss="http://evil.example"), "issuer"),
        (token(idp, "HS256", aud="other-client"), "client"),
        (token(idp, "HS256", exp=int(time.time()) - 3600), "expired"),
        (token(idp, "none"), "algorithm"),
        ("not.a.jwt", "JWT"),
    ):
        with pytest.raises(SsoError, match=why):
            hs.verify(bad, now)
    p = OidcProvider(idp, "ykt", SECRET)  # the default: public-key algorithms
    assert p.verify(token(idp, "EdDSA", KEY), now)["sub"] == "s-1"
    with pytest.raises(SsoError, match="signature"):
        p.verify(token(idp, "EdDSA", SigningKey.generate()), now)


def test_algorithm_confusion_is_refused(idp: str) -> None:
    """Issue 10 item 17: an HS256 token whose HMAC key is the provider's public key (any
    encoding of it), or the client secret, is refused by a provider that signs with a public
    key; so is a token whose algorithm is not the one of the key it names."""
    now = int(time.time() * 1000)
    p = OidcProvider(idp, "ykt", SECRET)
    pub = KEY.public
    raw = pub.to_bytes()
    pem = pub._key.public_bytes(  # the key's PEM, as an attacker would take it
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = requests.get(idp + "/jwks", timeout=5).json()["keys"][0]
    for material in (raw, pem, b64(raw).encode(), json.dumps(jwk).encode(), None):
        with pytest.raises(SsoError, match="algorithm"):
            p.verify(token(idp, "HS256", material), now)
    for alg in ("RS256", "ES256"):  # pinned, but not the algorithm of the Ed25519 key named
        with pytest.raises(SsoError):
            p.verify(token(idp, alg, KEY), now)
    ed_only = OidcProvider(idp, "ykt", SECRET, algorithms=("RS256",))
    with pytest.raises(SsoError, match="algorithm"):  # pinned: EdDSA is not this provider's
        ed_only.verify(token(idp, "EdDSA", KEY), now)


def test_tokens_for_another_audience_or_not_yet_valid_are_refused(idp: str) -> None:
    now = int(time.time() * 1000)
    p = OidcProvider(idp, "ykt", SECRET)
    for bad, why in (
        (token(idp, "EdDSA", KEY, aud="other-client"), "another client"),
        (token(idp, "EdDSA", KEY, aud=["other-client"]), "another client"),
        (token(idp, "EdDSA", KEY, aud=["other-client", "ykt"]), "another client"),
        (token(idp, "EdDSA", KEY, aud=["other-client", "ykt"], azp="other-client"), "client"),
        (token(idp, "EdDSA", KEY, nbf=int(time.time()) + 3600), "not valid yet"),
        (token(idp, "EdDSA", KEY, iat=int(time.time()) + 3600), "not valid yet"),
        (token(idp, "EdDSA", KEY, iat=None), "iat"),
        (token(idp, "EdDSA", KEY, sub=None), "sub"),
        (token(idp, "EdDSA", KEY, exp=True), "exp"),
        (token(idp, "EdDSA", KEY, head={"kid": "nobody"}), "unknown key"),
    ):
        with pytest.raises(SsoError, match=why):
            p.verify(bad, now)
    both = token(idp, "EdDSA", KEY, aud=["other-client", "ykt"], azp="ykt")
    assert p.verify(both, now)["azp"] == "ykt"


def test_hs256_is_pinned_alone_or_not_at_all() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        OidcProvider("http://127.0.0.1:9", "ykt", SECRET, algorithms=("HS256",))
    with pytest.raises(ConfigError, match="HS256"):
        check_algorithms(["EdDSA", "HS256"])
    with pytest.raises(ConfigError, match="none"):
        check_algorithms(["none"])
    assert check_algorithms(["EdDSA", " RS256", "EdDSA"]) == ("EdDSA", "RS256")
