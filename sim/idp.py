"""A local stand-in for the campus identity provider (统一身份认证), speaking the OpenID Connect
authorization-code flow, for tests and demos of single sign-on (R16): ``ykt sim idp``.

It has no login form: ``/authorize`` signs in the user named by ``login_hint`` (when that user
is in its list, or any user when the list is empty) and redirects back with a one-time code;
``/token`` exchanges the code (client id and secret checked, redirect URI must match) for an ID
token signed with Ed25519 (``EdDSA``) whose ``preferred_username`` is the staff/student number.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from sync.crypto import SigningKey
from sync.errors import ConfigError

CODE_TTL_S = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def create_idp(
    issuer: str,
    client_id: str,
    client_secret: str,
    users: set[str] | None = None,
    key: SigningKey | None = None,
) -> FastAPI:
    issuer = issuer.rstrip("/")
    key = key or SigningKey.generate()
    kid = "standin-1"
    codes: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    app = FastAPI(title="ykt stand-in identity provider", openapi_url=None)

    def error(status: int, code: str, text: str) -> JSONResponse:
        return JSONResponse({"error": code, "error_description": text}, status_code=status)

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "jwks_uri": issuer + "/jwks",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
        }

    @app.get("/jwks")
    def jwks() -> dict[str, Any]:
        x = _b64url(key.public.to_bytes())
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "use": "sig"}]}

    @app.get("/authorize", response_model=None)
    def authorize(request: Request) -> RedirectResponse | JSONResponse:
        q = request.query_params
        if q.get("client_id") != client_id or q.get("response_type") != "code":
            return error(400, "invalid_request", "unknown client or response type")
        redirect_uri, user = q.get("redirect_uri", ""), q.get("login_hint", "")
        if not redirect_uri.startswith(("http://", "https://")):
            return error(400, "invalid_request", "redirect_uri required")
        if not user or (users and user not in users):
            return error(403, "access_denied", f"the stand-in does not know user {user!r}")
        code = secrets.token_urlsafe(24)
        with lock:
            codes[code] = {
                "user": user,
                "nonce": q.get("nonce", ""),
                "redirect_uri": redirect_uri,
                "expires": time.time() + CODE_TTL_S,
            }
        sep = "&" if "?" in redirect_uri else "?"
        target = redirect_uri + sep + urlencode({"code": code, "state": q.get("state", "")})
        return RedirectResponse(target, status_code=302)

    @app.post("/token", response_model=None)
    async def token(request: Request) -> dict[str, Any] | JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
            return error(401, "invalid_client", "bad client credentials")
        with lock:
            grant = codes.pop(form.get("code", ""), None)
        if grant is None or grant["expires"] < time.time():
            return error(400, "invalid_grant", "unknown, used or expired code")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return error(400, "invalid_grant", "redirect_uri does not match")
        now = int(time.time())
        header = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
        claims = {
            "iss": issuer,
            "sub": f"sub-{grant['user']}",
            "aud": client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "preferred_username": grant["user"],
        }
        signed = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        id_token = signed + "." + _b64url(key.sign(signed.encode()))
        return {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "id_token": id_token,
        }

    return app


def add_idp_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser(
        "idp",
        help="run a stand-in campus identity provider (OpenID Connect) for single sign-on",
        description="A local OpenID Connect provider for tests and demos of campus single "
        "sign-on (R16).  No login form: /authorize signs in the user named by login_hint.  "
        "Point the server at it with `ykt server --sso-issuer URL --sso-client-id ID "
        "--sso-client-secret-file FILE`.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", default="ykt")
    p.add_argument(
        "--client-secret-file", type=Path, required=True, help="file holding the client secret"
    )
    p.add_argument("--users", default="", help="comma-separated numbers it knows (default: any)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    try:
        secret = args.client_secret_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the client secret: {exc}") from exc
    users = {u.strip() for u in args.users.split(",") if u.strip()} or None
    issuer = f"http://{args.host}:{args.port}"
    app = create_idp(issuer, args.client_id, secret, users)
    print(f"stand-in identity provider at {issuer}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
