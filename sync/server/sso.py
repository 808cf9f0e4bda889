"""Campus single sign-on (R16) as a pluggable identity provider.

:class:`IdentityProvider` is the interface: where to send the browser, and, given the code the
provider sent back, whose staff/student number it is.  :class:`OidcProvider` implements it for an
OpenID Connect provider (authorization-code flow): discovery document, token endpoint with
``client_secret_post``, and the ID token verified by PyJWT (a well-kept JOSE library; nothing
cryptographic is done by hand here):

- **the algorithms are pinned per provider** (``--sso-algorithms``, default
  :data:`DEFAULT_ALGORITHMS`: public-key algorithms only).  A public-key token is checked with
  the provider's key of the token's ``kid`` from its JWKS (:class:`jwt.PyJWKClient`: cached,
  fetched again at most every 30 s for an unknown ``kid``), and the token's ``alg`` must be
  both pinned and the algorithm of that key: an HS256 token "signed" with the provider's public
  key (algorithm confusion) or an RS256 token naming an Ed25519 key is refused.  ``HS256`` (the
  client secret as the key) is accepted only when it is the one algorithm pinned;
- ``iss`` (the configured issuer), ``aud`` (this client; with several audiences ``azp`` must be
  this client), ``sub``, ``exp``, ``iat`` and ``nbf`` (with ``SKEW_S`` of clock skew, on the
  server's injectable clock) and the sign-in's ``nonce`` are checked.

The claim that holds the staff/student number is configurable (default ``preferred_username``).
``ykt server --sso-issuer URL --sso-client-id ID --sso-client-secret-file F
[--sso-algorithms EdDSA]`` switches it on; ``ykt sim idp`` is a local stand-in provider (EdDSA)
for tests and demos.  Only students and staff sign in this way (R16); the state and nonce of
each sign-in live in the database, single use, ten minutes.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlencode, urlparse

import jwt
import requests

from sync import rules
from sync.errors import ConfigError, YktError
from sync.server import holders
from sync.server.context import SSO_ALGORITHMS, Context
from sync.server.errors import Forbidden, Invalid, NotFound, Unauthorized

STATE_TTL_MS = 10 * 60 * 1000
SKEW_S = 120
#: the ID-token algorithms accepted when the operator pins none: public-key algorithms only,
#: each with the provider's key of that type from its JWKS
DEFAULT_ALGORITHMS = SSO_ALGORITHMS
#: the shortest client secret HS256 may use as its key (bytes; RFC 7518 section 3.2)
MIN_SECRET = 32
#: every algorithm a provider may be pinned to
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256")


class SsoError(YktError):
    """The provider could not be reached or answered something we cannot accept."""

    http_status = 401
    code = "sso_failed"


class IdentityProvider(Protocol):
    def authorization_url(self, *, state: str, nonce: str, redirect_uri: str) -> str: ...

    def subject(self, *, code: str, nonce: str, redirect_uri: str, now_ms: int) -> str:
        """The staff/student number of whoever the code was issued to."""
        ...


def check_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    """The algorithms a provider is pinned to, checked: known ones, and HS256 only alone (a
    secret-key algorithm beside public-key ones is the algorithm-confusion hole)."""
    algs = tuple(dict.fromkeys(a.strip() for a in algorithms if a.strip()))
    unknown = [a for a in algs if a not in ALGORITHMS]
    if not algs or unknown:
        raise ConfigError(
            f"single sign-on algorithms: {', '.join(unknown) or 'none given'} (known: "
            f"{', '.join(ALGORITHMS)})"
        )
    if "HS256" in algs and len(algs) > 1:
        raise ConfigError(
            "single sign-on algorithms: HS256 (the client secret as the key) cannot be "
            "accepted beside public-key algorithms"
        )
    return algs


class OidcProvider:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        claim: str = "preferred_username",
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.claim = claim
        self.algorithms = check_algorithms(algorithms)
        if "HS256" in self.algorithms and len(client_secret.encode()) < MIN_SECRET:
            raise ConfigError(
                f"single sign-on with HS256 needs a client secret of {MIN_SECRET} bytes or "
                "more (RFC 7518: a shorter key can be guessed from a token)"
            )
        self._meta: dict[str, Any] | None = None
        self._jwks: jwt.PyJWKClient | None = None
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
                offered = meta.get("id_token_signing_alg_values_supported")
                if isinstance(offered, list) and not set(offered) & set(self.algorithms):
                    raise SsoError(
                        "identity provider signs ID tokens with "
                        f"{', '.join(map(str, offered))}; this server accepts "
                        f"{', '.join(self.algorithms)} (--sso-algorithms)"
                    )
                self._meta = meta
            return self._meta

    def _jwks_client(self) -> jwt.PyJWKClient:
        """The provider's keys (JWKS) from its discovery document: over https, or from the
        issuer's own origin."""
        with self._lock:
            client = self._jwks
        if client is not None:
            return client
        uri = self.metadata().get("jwks_uri")
        if not isinstance(uri, str):
            raise SsoError("identity provider: no jwks_uri")
        where, home = urlparse(uri), urlparse(self.issuer)
        if where.scheme != "https" and (where.scheme, where.netloc) != (home.scheme, home.netloc):
            raise SsoError("identity provider: jwks_uri is neither https nor the issuer's")
        client = jwt.PyJWKClient(uri, cache_jwk_set=True, lifespan=300, timeout=5)
        with self._lock:
            self._jwks = self._jwks or client
            return self._jwks

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
        """Check an ID token (PyJWT): the signature, with a pinned algorithm and the
        provider's key of that algorithm; ``iss``, ``aud``/``azp``, ``sub``; ``exp``, ``iat``,
        ``nbf`` on the server's clock.  Its claims, or :class:`SsoError`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise SsoError("ID token is not a JWT") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise SsoError(
                f"ID token algorithm {alg!r} is not accepted from this provider "
                f"({', '.join(self.algorithms)})"
            )
        key: Any = self.client_secret
        if alg != "HS256":
            try:
                key = self._jwks_client().get_signing_key_from_jwt(token)
            except jwt.PyJWKClientConnectionError as exc:
                raise SsoError(f"identity provider: its keys cannot be fetched: {exc}") from exc
            except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.DecodeError) as exc:
                raise SsoError(f"ID token signed with an unknown key: {exc}") from exc
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.client_id,
                issuer=[self.issuer, self.issuer + "/"],
                options={
                    "require": ["iss", "aud", "exp", "iat", "sub"],
                    "enforce_minimum_key_length": True,
                    # the times are checked below, on the server's (injectable) clock
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAlgorithmError as exc:
            raise SsoError(f"ID token algorithm {alg!r} is not accepted: {exc}") from exc
        except jwt.InvalidSignatureError as exc:
            raise SsoError("ID token signature does not verify") from exc
        except jwt.InvalidIssuerError as exc:
            raise SsoError("ID token comes from another issuer") from exc
        except jwt.InvalidAudienceError as exc:
            raise SsoError("ID token is for another client") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise SsoError(f"ID token lacks the {exc.claim!r} claim") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
            raise SsoError(f"ID token refused: {exc}") from exc
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise SsoError("ID token is for another client (its azp)")
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name, 0)  # exp and iat are required (above)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SsoError(f"ID token {name} is not a time")
            times[name] = float(value)
        now_s = now_ms / 1000
        if times["exp"] + SKEW_S < now_s:
            raise SsoError("ID token expired")
        if max(times["iat"], times["nbf"]) > now_s + SKEW_S:
            raise SsoError("ID token is not valid yet (check the clocks)")
        return claims


@lru_cache(maxsize=8)
def _oidc(
    issuer: str, client_id: str, secret: str, claim: str, algorithms: tuple[str, ...]
) -> OidcProvider:
    return OidcProvider(issuer, client_id, secret, claim, algorithms)


def provider(ctx: Context) -> IdentityProvider:
    cfg = ctx.config
    if not cfg.sso_issuer:
        raise NotFound("campus single sign-on is not configured on this server", "no_sso")
    return _oidc(
        cfg.sso_issuer,
        cfg.sso_client_id,
        cfg.sso_client_secret,
        cfg.sso_claim,
        tuple(cfg.sso_algorithms),
    )


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
