"""``ykt sim paygate``: a payment provider for tests and demos of R7 top-ups (the stand-in for
WeChat Pay, Alipay, the app's and the bank's payment services; the protocol is
:mod:`sync.paygate`).

It holds its own Ed25519 key (``DIR/provider.key``, mode 0600) and writes the public half to
``DIR/provider.pub`` for ``ykt admin paygate set``.  It takes the payment of an order
(``POST /v1/pay``, what the holder's app does: ``ykt sim wallet topup``), keeps it
(``DIR/paygate.db``) and delivers its signed payment notification to the notify URL the order
names, over HTTP, again with a growing delay until the server acknowledges it
(``{"code": "SUCCESS"}``), as real providers do; it gives up after ``--max-attempts``.  It
signs statements of what it was paid (``GET /v1/statement``) for the server's reconciliation.
``ykt sim paygate redeliver`` delivers a notification once more, as sent or with a field
altered after signing (what a man in the middle would do).

Simulated payers always pay: the provider refuses only an order that has expired, an order
paid before, or a body that is not an order.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import requests
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from sim.errors import SimError, SimUsageError
from sync import paygate
from sync.bodylimit import BodyLimit
from sync.bounds import MAX_TS_MS
from sync.clock import Clock, SystemClock
from sync.cmdline import Sub, json_option
from sync.crypto import SigningKey
from sync.db import Database, Migrations
from sync.errors import ProtocolError
from sync.paygate import Notification, PayOrder, Statement, StatementLine

log = logging.getLogger(__name__)

MIGRATIONS = Migrations()
MIGRATIONS.add(
    "0001-payments",
    """
    CREATE TABLE payments (
        txn_id {text} PRIMARY KEY,
        order_id {text} NOT NULL UNIQUE,
        channel {text} NOT NULL,
        amount {int} NOT NULL,
        currency {text} NOT NULL,
        notify_url {text} NOT NULL,
        attach {text} NOT NULL,
        paid_ms {int} NOT NULL,
        acked {int} NOT NULL DEFAULT 0,
        attempts {int} NOT NULL DEFAULT 0,
        next_ms {int} NOT NULL,
        last_error {text} NOT NULL DEFAULT ''
    )
    """,
)
#: the longest wait between two deliveries of one notification
MAX_DELAY_S = 60.0
TAMPERABLE = ("amount", "currency", "channel", "order", "account")


class PaygateRefused(SimError):
    """The provider does not take this payment (expired or paid order)."""

    http_status = 409
    code = "refused"


@dataclass
class Delivery:
    txn_id: str
    order_id: str
    status: int | None  # the server's HTTP status; None: it could not be reached
    answer: Any
    acknowledged: bool


class Provider:
    """The provider's state (key, payments) and its delivery of notifications."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Clock | None = None,
        retry_s: float = 0.5,
        max_attempts: int = 12,
    ) -> None:
        self.dir = directory
        self.clock = clock or SystemClock()
        self.retry_s = retry_s
        self.max_attempts = max_attempts
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / "provider.key"
        self.key = SigningKey.load(key_file) if key_file.exists() else SigningKey.generate()
        if not key_file.exists():
            self.key.save(key_file)
        pub = directory / "provider.pub"
        if not pub.exists() or pub.read_text().strip() != self.key.public.to_b64():
            pub.write_text(self.key.public.to_b64() + "\n")
        self.db = Database(directory / "paygate.db", migrations=MIGRATIONS)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = threading.local()

    # -- payments -------------------------------------------------------------------------------
    def pay(self, order: PayOrder) -> dict[str, Any]:
        """The holder pays ``order``: a new transaction, whose notification is delivered."""
        now = self.clock.now_ms()
        with self.db.tx() as tx:
            done = tx.one("SELECT * FROM payments WHERE order_id = ?", (order.order_id,))
            if done is not None:
                raise PaygateRefused(f"order {order.order_id} is paid already ({done['txn_id']})")
            if now > order.expires_ms:
                raise PaygateRefused(f"order {order.order_id} has expired: it cannot be paid")
            txn_id = f"P{now}{secrets.token_hex(6)}"
            tx.execute(
                "INSERT INTO payments (txn_id, order_id, channel, amount, currency, notify_url, "
                "attach, paid_ms, next_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    txn_id,
                    order.order_id,
                    order.channel,
                    order.amount_fen,
                    order.currency,
                    order.notify_url,
                    order.attach,
                    now,
                    now,
                ),
            )
        self._wake.set()
        return {**self.payment(order.order_id), "status": "paid"}

    def payment(self, order_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM payments WHERE order_id = ?", (order_id,))
        if row is None:
            raise SimUsageError(f"no payment for order {order_id!r} at this provider")
        return {
            "txn_id": row["txn_id"],
            "order_id": row["order_id"],
            "channel": row["channel"],
            "amount_fen": int(row["amount"]),
            "currency": row["currency"],
            "paid_ms": int(row["paid_ms"]),
            "acknowledged": bool(row["acked"]),
            "attempts": int(row["attempts"]),
            "last_error": row["last_error"],
        }

    def notification(
        self, order_id: str, tamper: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The signed notification of an order's payment (signed now); with ``tamper``, one
        field of it altered after signing."""
        row = self.db.one("SELECT * FROM payments WHERE order_id = ?", (order_id,))
        if row is None:
            raise SimUsageError(f"no payment for order {order_id!r} at this provider")
        note = Notification(
            id="N" + row["txn_id"],
            event="payment.succeeded",
            order_id=row["order_id"],
            txn_id=row["txn_id"],
            channel=row["channel"],
            amount_fen=int(row["amount"]),
            currency=row["currency"],
            paid_ms=int(row["paid_ms"]),
            attach=row["attach"],
        )
        body = paygate.encode(note)
        headers = paygate.sign(self.key, body, self.clock.now_ms())
        if tamper is not None:
            body = paygate.encode(_tampered(note, tamper))  # the signature stays the original's
        return body, headers

    def deliver(self, order_id: str, tamper: str | None = None) -> Delivery:
        """Deliver the notification of an order's payment once; an acknowledgement of the
        untampered notification ends its redelivery."""
        row = self.db.one("SELECT txn_id, notify_url FROM payments WHERE order_id = ?", (order_id,))
        if row is None:
            raise SimUsageError(f"no payment for order {order_id!r} at this provider")
        body, headers = self.notification(order_id, tamper)
        status: int | None = None
        answer: Any = None
        try:
            resp = self._session().post(
                row["notify_url"],
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                timeout=10,
            )
            status = resp.status_code
            try:
                answer = resp.json()
            except ValueError:
                answer = resp.text[:500]
        except requests.RequestException as exc:
            answer = f"unreachable: {exc}"
        ok = status == 200 and isinstance(answer, dict) and answer.get("code") == "SUCCESS"
        if tamper is None:
            self._delivered(order_id, ok, f"{status}: {answer}"[:300])
        return Delivery(row["txn_id"], order_id, status, answer, ok)

    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._http, "s", None)
        if s is None:
            s = self._http.s = requests.Session()
        return s

    def _delivered(self, order_id: str, ok: bool, error: str) -> None:
        now = self.clock.now_ms()
        with self.db.tx() as tx:
            row = tx.one("SELECT attempts FROM payments WHERE order_id = ?", (order_id,))
            if row is None:
                return
            attempts = int(row["attempts"]) + 1
            delay = min(self.retry_s * 2 ** (attempts - 1), MAX_DELAY_S)
            tx.execute(
                "UPDATE payments SET acked = CASE WHEN ? = 1 THEN 1 ELSE acked END, "
                "attempts = ?, next_ms = ?, last_error = ? WHERE order_id = ?",
                (int(ok), attempts, now + int(delay * 1000), "" if ok else error, order_id),
            )

    def statement(self, channel: str, from_ms: int, to_ms: int) -> tuple[bytes, dict[str, str]]:
        """What it was paid on ``channel`` in ``[from_ms, to_ms)``, signed."""
        rows = self.db.all(
            "SELECT * FROM payments WHERE channel = ? AND paid_ms >= ? AND paid_ms < ? "
            "ORDER BY paid_ms, txn_id",
            (channel, from_ms, to_ms),
        )
        st = Statement(
            from_ms=from_ms,
            to_ms=to_ms,
            channel=channel,  # type: ignore[arg-type]
            lines=[
                StatementLine(
                    order_id=r["order_id"],
                    txn_id=r["txn_id"],
                    channel=r["channel"],
                    amount_fen=int(r["amount"]),
                    currency=r["currency"],
                    paid_ms=int(r["paid_ms"]),
                )
                for r in rows
            ],
        )
        body = paygate.encode(st)
        return body, paygate.sign(self.key, body, self.clock.now_ms())

    # -- redelivery -----------------------------------------------------------------------------
    def start(self) -> Provider:
        self._thread = threading.Thread(target=self._loop, name="paygate-delivery", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15)
        self.db.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = self.clock.now_ms()
            due = self.db.all(
                "SELECT order_id FROM payments WHERE acked = 0 AND attempts < ? AND next_ms <= ? "
                "ORDER BY next_ms",
                (self.max_attempts, now),
            )
            for r in due:
                if self._stop.is_set():
                    return
                try:
                    self.deliver(r["order_id"])
                except Exception as exc:  # the loop must go on: a payment stays due
                    log.warning("delivery of %s failed: %s", r["order_id"], exc)
            nxt = self.db.scalar(
                "SELECT MIN(next_ms) FROM payments WHERE acked = 0 AND attempts < ?",
                (self.max_attempts,),
            )
            wait = 1.0 if nxt is None else min(max((int(nxt) - now) / 1000, 0.01), 1.0)
            self._wake.wait(wait)
            self._wake.clear()


def _tampered(note: Notification, field: str) -> Notification:
    options: dict[str, dict[str, Any]] = {
        "amount": {"amount_fen": note.amount_fen * 100 if note.amount_fen < 100_000 else 1},
        "currency": {"currency": "USD"},
        "channel": {"channel": "wechat" if note.channel != "wechat" else "app"},
        "order": {"order_id": note.order_id[:-1] + ("0" if note.order_id[-1] != "0" else "1")},
        "account": {"attach": note.attach + "X"},
    }
    return msgspec.structs.replace(note, **options[field])


# -- HTTP -----------------------------------------------------------------------------------------
def create_paygate(provider: Provider) -> FastAPI:
    app = FastAPI(title="ykt stand-in payment provider", openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=64 * 1024)

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "public_key": provider.key.public.to_b64()}

    @app.post("/v1/pay", response_model=None)
    async def pay(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            order = msgspec.json.decode(await request.body(), type=PayOrder, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return error(422, "invalid", f"not an order: {exc}")
        try:
            return provider.pay(order)
        except PaygateRefused as exc:
            return error(409, exc.code, str(exc))

    @app.get("/v1/payments/{order_id}", response_model=None)
    def payment(order_id: str) -> dict[str, Any] | JSONResponse:
        try:
            return provider.payment(order_id)
        except SimUsageError as exc:
            return error(404, "not_found", str(exc))

    @app.get("/v1/statement")
    def statement(
        channel: Annotated[str, Query(pattern=r"^(app|wechat|alipay|bank)$")],
        from_ms: Annotated[int, Query(ge=0, le=MAX_TS_MS)],
        to_ms: Annotated[int, Query(ge=0, le=MAX_TS_MS)],
    ) -> Response:
        body, headers = provider.statement(channel, from_ms, to_ms)
        return Response(body, media_type="application/json", headers=headers)

    return app


# -- the command ----------------------------------------------------------------------------------
def add_paygate_parser(cmds: Sub) -> None:
    p = cmds.add_parser(
        "paygate",
        help="run a stand-in payment provider for top-ups (R7), or redeliver a notification",
        description="A payment provider for tests and demos of R7 top-ups: it writes "
        "DIR/provider.pub (register it with `ykt admin paygate set --channel C --url "
        "http://127.0.0.1:PORT --public-key DIR/provider.pub`), takes the payment of an order "
        "(`ykt sim wallet topup`) and delivers the signed notification to the server, again "
        "until the server acknowledges it.",
    )
    p.add_argument("--dir", type=Path, help="the provider's state and key (required)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="port to listen on (required to run it)")
    p.add_argument(
        "--retry-s",
        type=float,
        default=0.5,
        help="delay before the first redelivery, doubling each time up to 60 s (default 0.5)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=12,
        help="deliveries of one notification before giving up (default 12)",
    )
    p.set_defaults(func=_run)
    sub = p.add_subparsers(dest="paygate_command", metavar="ACTION")
    r = sub.add_parser(
        "redeliver",
        help="deliver the notification of an order's payment again (exit 1: not acknowledged)",
        description="Deliver the notification of an order's payment once more, signed afresh, "
        "as sent or with one field altered after signing (--tamper).  Prints the server's "
        "answer; exits 0 when the server acknowledged it, 1 when it refused it.",
    )
    r.add_argument("--dir", type=Path, required=True, help="the provider's state and key")
    r.add_argument("--order", required=True, help="the order id")
    r.add_argument("--tamper", choices=TAMPERABLE, help="alter this field after signing")
    json_option(r)
    r.set_defaults(func=_redeliver)


def _open(directory: Path, **kw: Any) -> Provider:
    try:
        return Provider(directory, **kw)
    except (OSError, ProtocolError) as exc:
        raise SimUsageError(f"cannot use the provider directory {directory}: {exc}") from exc


def _run(args: argparse.Namespace) -> int:
    if args.port is None or args.dir is None:
        raise SimUsageError("--port and --dir are required to run the payment provider")
    provider = _open(args.dir, retry_s=args.retry_s, max_attempts=args.max_attempts).start()
    print(
        f"stand-in payment provider at http://{args.host}:{args.port} "
        f"(public key {args.dir / 'provider.pub'})",
        flush=True,
    )
    try:
        uvicorn.run(create_paygate(provider), host=args.host, port=args.port, log_level="warning")
    finally:
        provider.stop()
    return 0


def _redeliver(args: argparse.Namespace) -> int:
    provider = _open(args.dir)
    try:
        d = provider.deliver(args.order, args.tamper)
    finally:
        provider.db.close()
    out = {
        "order_id": d.order_id,
        "txn_id": d.txn_id,
        "tamper": args.tamper,
        "status": d.status,
        "acknowledged": d.acknowledged,
        "answer": d.answer,
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        verdict = "acknowledged" if d.acknowledged else "REFUSED"
        print(f"order {d.order_id} ({d.txn_id}): {verdict} ({d.status}): {d.answer}")
    return 0 if d.acknowledged else 1
