"""A client of an agent's local control API, for test engineers and tests."""

from __future__ import annotations

import argparse
import base64
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from drivers.errors import DriverError
from drivers.qr.decoders import decode_image_bytes, get_decoder
from edge.pos import controltoken
from sim.errors import SimError, SimUsageError
from sync.errors import RuleError
from sync.rules import check_password_format

FINAL = ("approved", "declined")


def token_file_option(p: argparse.ArgumentParser) -> None:
    """``--token-file``: where the agent's control token is, when ``ykt sim`` cannot find it by
    itself (an agent of another user, e.g. run by systemd: DATA/control.token, as root)."""
    p.add_argument(
        "--token-file",
        type=Path,
        help="the agent's control token (DATA/control.token); default: found by the agent's "
        "port when the agent runs as this user",
    )


class AgentControl:
    """``token``: the agent's per-boot control token (edge/pos/controltoken.py); by default
    read from ``token_file``, or else found in the per-user registry by the agent's port."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        *,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._given = token is not None
        self._token_file = token_file
        if token is None and token_file is not None and self._found() is None:
            raise SimUsageError(f"--token-file {token_file}: no control token in it")
        self._use(token if token is not None else self._found())

    def _found(self) -> str | None:
        """The agent's current token from the file given, or else from the registry."""
        if self._token_file is not None:
            return controltoken.read(self._token_file)
        port = urlsplit(self.base).port
        return controltoken.find(port) if port is not None else None

    def _use(self, token: str | None) -> None:
        if token:
            self.session.headers[controltoken.HEADER] = token

    def _send(self, method: str, path: str, body: Any, timeout: float) -> requests.Response:
        try:
            return self.session.request(method, self.base + path, json=body, timeout=timeout)
        except requests.RequestException as exc:
            raise SimError(f"cannot reach the agent at {self.base}: {exc}") from exc

    def _call(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        resp = self._send(method, path, body, timeout)
        if resp.status_code == 401 and not self._given:  # the agent restarted: a new token
            fresh = self._found()
            if fresh and fresh != self.session.headers.get(controltoken.HEADER):
                self._use(fresh)
                resp = self._send(method, path, body, timeout)
        try:
            data = resp.json()
        except ValueError as exc:
            raise SimError(f"agent answered {resp.status_code} without JSON") from exc
        if resp.status_code == 404 and path.startswith("/control/sim/"):
            raise SimUsageError(f"agent refused {path}: {self._not_simulated(path)}")
        if resp.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            msg = err.get("message") or str(data)
            raise SimUsageError(f"agent refused {path}: {msg}")
        return dict(data)

    def _not_simulated(self, path: str) -> str:
        """Why an agent has no ``/control/sim/…`` route: the device is not simulated (the
        routes exist only for ``sim://`` devices, sim.devices)."""
        status = self.status()
        if path == "/control/sim/frame":
            return (
                f"not_sim_camera: this agent's camera is {status.get('camera') or 'none'}, "
                "not a simulated camera"
            )
        return (
            f"this agent reads {status.get('reader')}, not a simulated reader (sim://): put "
            "cards on a pcsc:// reader with `ykt sim card present`"
        )

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/control/state")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/control/status")

    def wait(self, after: int, until: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimError(f"no outcome within {timeout:.0f}s (agent state unchanged)")
            s = self._call(
                "GET", f"/control/state?after={after}&wait={min(left, 25):.2f}", timeout=left + 5
            )
            if s["version"] > after and s["state"] in until:
                return s
            after = max(after, s["version"])

    # -- the till (edge.pos.till) -------------------------------------------------------------
    def till(self) -> dict[str, Any]:
        return self._call("GET", "/control/till")

    def sign_in(self, number: str, pin: str) -> dict[str, Any]:
        return self._call("POST", "/control/cashier/sign-in", {"number": number, "pin": pin})

    def sign_out(self) -> dict[str, Any]:
        return self._call("POST", "/control/cashier/sign-out")

    def shift_open(self) -> dict[str, Any]:
        return self._call("POST", "/control/shift/open")

    def shift_close(self) -> dict[str, Any]:
        return self._call("POST", "/control/shift/close")

    def refund(
        self,
        sale: str | None,
        supervisor: str,
        supervisor_pin: str,
        amount_fen: int | None = None,
    ) -> dict[str, Any]:
        """Refund sale ``sale`` (its sequence number), or with None the newest sale of today of
        the card lying on the reader."""
        body: dict[str, Any] = {"supervisor": supervisor, "supervisor_pin": supervisor_pin}
        body.update({"sale": sale} if sale is not None else {"card": True})
        if amount_fen is not None:
            body["amount_fen"] = amount_fen
        return self._call("POST", "/control/refund", body)

    def refund_by_tap(
        self,
        supervisor: str,
        supervisor_pin: str,
        amount_fen: int | None = None,
        card_no: str | None = None,
    ) -> dict[str, Any]:
        """A refund found by the card: the agent waits for a tap; ``card_no`` is tapped on the
        simulated reader once it waits (without it, the card must lie on the reader or be put
        there meanwhile)."""
        with ThreadPoolExecutor(1) as pool:
            version = self.state()["version"]  # the agent bumps it when it starts waiting
            asked = pool.submit(self.refund, None, supervisor, supervisor_pin, amount_fen)
            deadline = time.monotonic() + self.timeout
            while card_no is not None and not asked.done() and time.monotonic() < deadline:
                if self.till().get("waiting_for_tap"):
                    self.present(card_no)
                    break
                s = self._call("GET", f"/control/state?after={version}&wait=2", timeout=10)
                version = max(version, s["version"])
            return asked.result()

    def amount(self, amount_fen: int) -> dict[str, Any]:
        return self._call("POST", "/control/amount", {"amount_fen": amount_fen})

    def pin(self, pin: str) -> dict[str, Any]:
        return self._call("POST", "/control/pin", {"pin": pin})

    def cancel(self) -> dict[str, Any]:
        return self._call("POST", "/control/cancel")

    def present(self, card_no: str, uid: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"card_no": card_no}
        if uid:
            body["uid"] = uid
        return self._call("POST", "/control/sim/card", body)

    def sale(
        self,
        amount_fen: int,
        card_no: str | None = None,
        uid: str | None = None,
        pin: str | None = None,
    ) -> dict[str, Any]:
        """Key the amount, tap the card (``card_no`` on a ``sim://`` reader; otherwise the card
        on the reader pays), key the PIN when asked; the outcome as a dict.

        A PIN that is not six digits is refused before anything is keyed; a sale this call
        started and could not finish is cancelled, so it never leaves the terminal waiting."""
        if pin is not None:
            try:
                check_password_format(pin)
            except RuleError as exc:
                raise SimUsageError(f"--pin: {exc}") from None
        keyed = self.amount(amount_fen)
        try:
            if card_no is not None:
                self.present(card_no, uid)
            try:
                s = self.wait(keyed["version"], (*FINAL, "wait_pin"), self.timeout)
            except SimError:
                if card_no is None:
                    raise SimError(
                        f"no card was read within {self.timeout:.0f}s (is a card on the "
                        "agent's reader? ykt sim card present …)"
                    ) from None
                raise
            if s["state"] == "wait_pin":
                if pin is None:
                    self.cancel()
                    return outcome(s, needs_pin=True)
                self.pin(pin)
                s = self.wait(s["version"], FINAL, self.timeout)
        except SimError:
            self._cancel_quietly()
            raise
        return outcome(s)

    def _cancel_quietly(self) -> None:
        try:
            self.cancel()
        except SimError:
            pass

    # -- phone codes ---------------------------------------------------------------------------
    def show_image(self, data: bytes, wait: float = 5.0) -> dict[str, Any]:
        """Show a picture to the agent's ``sim://`` camera; ``read`` says if it found a code."""
        body = {"image_b64": base64.b64encode(data).decode(), "wait": wait}
        return self._call("POST", "/control/sim/frame", body, timeout=wait + 10)

    def code_text(self, text: str) -> dict[str, Any]:
        return self._call("POST", "/control/qr", {"text": text})

    def present_code(self, image: bytes) -> dict[str, Any]:
        """Show a code picture to the agent: to its ``sim://`` camera when it has one,
        otherwise decoded here with the same decoder and handed over as a scanner would."""
        try:
            return {"via": "camera", **self.show_image(image)}
        except SimUsageError as exc:
            if "not_sim_camera" not in str(exc) and "not a simulated camera" not in str(exc):
                raise

        try:
            texts = get_decoder().decode_still(decode_image_bytes(image, "the picture"))
        except (ValueError, DriverError) as exc:
            raise SimUsageError(str(exc)) from exc
        if not texts:
            return {"via": "decoded here", "read": False}
        self.code_text(texts[0])
        return {"via": "decoded here", "read": True}

    def sale_qr(self, amount_fen: int, image: bytes) -> dict[str, Any]:
        """Key the amount and show the payment code picture; the outcome as a dict."""
        keyed = self.amount(amount_fen)
        shown = self.present_code(image)
        if shown.get("read") is False:
            self._cancel_quietly()
            return {
                **outcome({**keyed, "state": "declined"}),
                "code": "unreadable",
                "reason": "the camera found no QR code in the picture",
                "method": "qr-forward",
            }
        s = self.wait(keyed["version"], FINAL, self.timeout)
        return outcome(s)

    def reverse(self, amount_fen: int) -> dict[str, Any]:
        """Key the amount and switch to reverse scan; the request as the screen shows it."""
        self.amount(amount_fen)
        return self._call("POST", "/control/reverse")

    def proof_image(self, image: bytes) -> dict[str, Any]:
        before = self.state()
        if before["state"] != "wait_proof":
            raise SimUsageError(f"the agent waits for no proof (state {before['state']})")
        shown = self.present_code(image)
        if shown.get("read") is False:
            raise SimUsageError("the camera found no QR code in the proof picture")
        s = self.wait(before["version"], (*FINAL, "wait_proof"), self.timeout)
        return outcome(s)

    def proof_code(self, digits: str) -> dict[str, Any]:
        s = self._call("POST", "/control/proof", {"code": digits})
        return outcome(s)


def outcome(s: dict[str, Any], needs_pin: bool = False) -> dict[str, Any]:
    return {
        "approved": bool(s.get("approved")),
        "state": s["state"],
        "code": s.get("code"),
        "reason": s.get("reason"),
        "needs_pin": needs_pin,
        "amount_fen": s.get("amount_fen"),
        "balance_fen": s.get("balance_fen"),
        "method": s.get("method"),
        "offline": s.get("offline"),
        "seq": s.get("seq"),
        "account": s.get("account") or {},
        "tries_left": s.get("tries_left"),
        "card_no": s.get("card_no"),
        "detail": s.get("detail"),
        "order": s.get("order"),
    }
