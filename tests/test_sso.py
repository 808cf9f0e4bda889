"""R16 campus single sign-on through the OpenID Connect provider interface, against the local
stand-in provider (`ykt sim idp`) served on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn

from sim.errors import SimError
from sim.idp import create_idp
from sim.wallet_business_cli import sso_login
from sync.crypto import SigningKey
from sync.server.sso import OidcProvider, SsoError
from tests.helpers import free_port, wait_until
from tests.live import Live, open_live

SECRET = "s3cret-for-tests"


@pytest.fixture
def idp() -> Iterator[str]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    app = create_idp(issuer, "ykt", SECRET, users={"S2023002", "C1", "S9"})
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


def test_id_tokens_with_another_key_issuer_audience_or_expired_are_refused(idp: str) -> None:
    import base64
    import hashlib
    import hmac
    import json
    import time

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def token(alg: str, key: SigningKey | None = None, **claims: object) -> str:
        base = {"iss": idp, "aud": "ykt", "exp": int(time.time()) + 60, "nonce": "n"}
        head = {"alg": alg, "kid": "standin-1"}
        signed = b64(json.dumps(head).encode()) + "." + b64(json.dumps({**base, **claims}).encode())
        if key is not None:
            sig = key.sign(signed.encode())
        else:
            sig = hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest()
        return signed + "." + b64(sig)

    p = OidcProvider(idp, "ykt", SECRET)
    now = int(time.time() * 1000)
    assert p.verify(token("HS256"), now)["aud"] == "ykt"  # the well-formed one passes
    for bad, why in (
        (token("EdDSA", SigningKey.generate()), "signature"),
        (token("HS256", iss="http://evil.example"), "issuer"),
        (token("HS256", aud="other-client"), "client"),
        (token("HS256", exp=int(time.time()) - 3600), "expired"),
        (token("none"), "algorithm"),
        ("not.a.jwt", "JWT"),
    ):
        with pytest.raises(SsoError, match=why):
            p.verify(bad, now)
