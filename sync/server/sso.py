"""Campus single sign-on (R16) as a pluggable identity provider.

:class:`IdentityProvider` is the interface: where to send the browser, and, given the code the
provider sent back, whose staff/student number it is.  :class:`OidcProvider` implements it for an
OpenID Connect provider (authorization-code flow): discovery document, token endpoint with
``client_secret_post``, ID token verified here (EdDSA/Ed25519, RS256 from the provider's JWKS, or
HS256 with the client secret), ``iss``, ``aud``, ``exp`` and ``nonce`` checked.  The claim that
holds the staff/student number is configurable (default ``preferred_username``).

``ykt server --sso-issuer URL --sso-client-id ID --sso-client-secret-file F`` switches it on;
``ykt sim idp`` is a local stand-in provider for tests and demos.  Only students and staff sign
in this way (R16); the state and nonce of each sign-in live in the database, single use, ten
minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlencode, urlparse

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync import rules
from sync.errors import YktError
from sync.server import holders
from sync.server.context import Context
from sync.server.errors import Forbidden, Invalid, NotFound, Unauthorized

STATE_TTL_MS = 10 * 60 * 1000
SKEW_S = 120


class SsoError(YktError):
    """The provider could not be reached or answered something we cannot accept."""

    http_status = 401
    code = "sso_failed"


class IdentityProvider(Protocol):
    def authorization_url(self, *, state: str, nonce: str, redirect_uri: str) -> str: ...

    def subject(self, *, code: str, nonce: str, redirect_uri: str, now_ms: int) -> str:
        """The staff/student number of whoever the code was issued to."""
        ...


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class OidcProvider:
    def __init__(
        self, issuer: str, client_id: str, client_secret: str, claim: str = "preferred_username"
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.claim = claim
        self._meta: dict[str, Any] | None = None
        self._jwks: dict[str | None, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _get(self, url: str) -> dict[str, Any]:
        try:
            resp = requests.get(url, timeout=5)
            resp.raise_for_status()
            out = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise SsoError(f"identity provider: GET {url}: {exc}") from exc
        if not isinstance(out, dict):
            raise SsoError(f"identity provider: {url} did not answer a JSON object")
        return out

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._meta is None:
                meta = self._get(self.issuer + "/.well-known/openid-configuration")
                if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                    raise SsoError("identity provider: discovery names another issuer")
                for key in ("authorization_endpoint", "token_endpoint"):
                    if not isinstance(meta.get(key), str):
                        raise SsoError(f"identity provider: discovery lacks {key}")
                self._meta = meta
            return self._meta

    def _key(self, kid: str | None) -> dict[str, Any]:
        if kid not in self._jwks:
            uri = self.metadata().get("jwks_uri")
            if not isinstance(uri, str):
                raise SsoError("identity provider: no jwks_uri")
            keys = self._get(uri).get("keys", [])
            self._jwks = {k.get("kid"): k for k in keys if isinstance(k, dict)}
        if kid not in self._jwks:
            raise SsoError("ID token signed with an unknown key")
        return self._jwks[kid]

    def authorization_url(self, *, state: str, nonce: str, redirect_uri: str) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile",
                "state": state,
                "nonce": nonce,
            }
        )
        endpoint = str(self.metadata()["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + query

    def subject(self, *, code: str, nonce: str, redirect_uri: str, now_ms: int) -> str:
        try:
            resp = requests.post(
                str(self.metadata()["token_endpoint"]),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
                timeout=5,
            )
            tokens = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise SsoError(f"identity provider: token request failed: {exc}") from exc
        if resp.status_code != 200 or not isinstance(tokens, dict):
            raise SsoError(f"identity provider refused the code ({resp.status_code})")
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SsoError("identity provider sent no ID token")
        claims = self.verify(id_token, now_ms)
        if claims.get("nonce") != nonce:
            raise SsoError("ID token nonce does not match this sign-in")
        number = claims.get(self.claim)
        if not isinstance(number, str) or not number:
            raise SsoError(f"ID token has no {self.claim!r} claim")
        return number

    def verify(self, token: str, now_ms: int) -> dict[str, Any]:
        """Check an ID token's signature and its iss, aud and exp claims."""
        try:
            head_b64, body_b64, sig_b64 = token.split(".")
            header = json.loads(_b64url(head_b64))
            claims = json.loads(_b64url(body_b64))
            sig = _b64url(sig_b64)
        except (ValueError, TypeError) as exc:
            raise SsoError("ID token is not a JWT") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise SsoError("ID token is not a JWT")
        signed = f"{head_b64}.{body_b64}".encode()
        alg = header.get("alg")
        try:
            if alg == "HS256":
                want = hmac.new(self.client_secret.encode(), signed, hashlib.sha256).digest()
                if not hmac.compare_digest(want, sig):
                    raise InvalidSignature
            elif alg == "EdDSA":
                jwk = self._key(header.get("kid"))
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                    raise SsoError("ID token key is not Ed25519")
                Ed25519PublicKey.from_public_bytes(_b64url(str(jwk["x"]))).verify(sig, signed)
            elif alg == "RS256":
                jwk = self._key(header.get("kid"))
                if jwk.get("kty") != "RSA":
                    raise SsoError("ID token key is not RSA")
                pub = rsa.RSAPublicNumbers(
                    int.from_bytes(_b64url(str(jwk["e"])), "big"),
                    int.from_bytes(_b64url(str(jwk["n"])), "big"),
                ).public_key()
                pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise SsoError(f"ID token algorithm {alg!r} is not accepted")
        except (InvalidSignature, ValueError, KeyError) as exc:
            raise SsoError("ID token signature does not verify") from exc
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise SsoError("ID token comes from another issuer")
        aud = claims.get("aud")
        if not (aud == self.client_id or (isinstance(aud, list) and self.client_id in aud)):
            raise SsoError("ID token is for another client")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + SKEW_S < now_ms / 1000:
            raise SsoError("ID token expired")
        return claims


@lru_cache(maxsize=8)
def _oidc(issuer: str, client_id: str, secret: str, claim: str) -> OidcProvider:
    return OidcProvider(issuer, client_id, secret, claim)


def provider(ctx: Context) -> IdentityProvider:
    cfg = ctx.config
    if not cfg.sso_issuer:
        raise NotFound("campus single sign-on is not configured on this server", "no_sso")
    return _oidc(cfg.sso_issuer, cfg.sso_client_id, cfg.sso_client_secret, cfg.sso_claim)


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def start(ctx: Context, redirect_uri: str) -> dict[str, Any]:
    url = urlparse(redirect_uri)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise Invalid("redirect_uri must be an http(s) URL", "bad_redirect_uri")
    idp = provider(ctx)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    try:
        auth_url = idp.authorization_url(state=state, nonce=nonce, redirect_uri=redirect_uri)
    except SsoError as exc:
        raise Unauthorized(f"single sign-on is unavailable: {exc}", "sso_failed") from exc
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        tx.execute("DELETE FROM sso_states WHERE expires_ms < ?", (now,))
        tx.execute(
            "INSERT INTO sso_states (state_hash, nonce, redirect_uri, expires_ms) "
            "VALUES (?, ?, ?, ?)",
            (_digest(state), nonce, redirect_uri, now + STATE_TTL_MS),
        )
    return {"authorization_url": auth_url, "state": state}


def finish(ctx: Context, state: str, code: str) -> dict[str, Any]:
    idp = provider(ctx)
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        row = tx.one("SELECT * FROM sso_states WHERE state_hash = ?", (_digest(state),))
        if row is None or row["used"] or row["expires_ms"] < now:
            raise Unauthorized("unknown, used or expired sign-in state", "sso_failed")
        tx.execute("UPDATE sso_states SET used = 1 WHERE state_hash = ?", (_digest(state),))
    try:
        number = idp.subject(
            code=code, nonce=row["nonce"], redirect_uri=row["redirect_uri"], now_ms=now
        )
    except SsoError as exc:
        raise Unauthorized(f"single sign-on failed: {exc}", "sso_failed") from exc
    acct = ctx.db.one("SELECT * FROM accounts WHERE number = ?", (number,))
    if acct is None:
        raise Unauthorized(f"no card account for {number!r}", "sso_failed")
    if not rules.sso_allowed(acct["type"]):
        raise Forbidden(
            "single sign-on is for students and staff; sign in with the card number (R16)",
            "sso_not_allowed",
        )
    return holders.open_session(ctx, dict(acct))
