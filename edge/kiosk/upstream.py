"""What the kiosk asks the server: one method per request, over :class:`sync.client.ServerClient`.

Card-present operations (``/v1/kiosk/…``) are signed terminal requests with the card's proof
(docs/card-present.md); the card-less ones a holder does at the kiosk use the same endpoints as
the website: loss and unlock (``/v1/holder/…``, rate limited per number and client), and for
the lost-card query (R17) and the electricity transfer (R15) a holder session opened with the
number and query password and closed again at once (``/v1/app/login`` … ``/v1/app/logout``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.client import ServerClient
from sync.errors import ServerRefused


class KioskServer:
    def __init__(self, client: ServerClient, holder_client: Callable[[str], ServerClient]) -> None:
        """``holder_client(token)``: an unsigned client sending ``Authorization: Bearer``."""
        self.client = client
        self.holder_client = holder_client

    def _post(self, path: str, body: dict[str, Any], signed: bool = True) -> dict[str, Any]:
        return self.client.request("POST", path, body=body, signed=signed)

    # -- with the card (R20, R4-R6) -----------------------------------------------------------
    def read_card(self, proof: dict[str, Any]) -> dict[str, Any]:
        return self._post("/v1/kiosk/card", {"card": proof})

    def change_query_password(self, proof: dict[str, Any], old: str, new: str) -> dict[str, Any]:
        body = {"card": proof, "old_password": old, "new_password": new}
        return self._post("/v1/kiosk/card/query-password", body)

    def change_consume_password(self, proof: dict[str, Any], old: str, new: str) -> dict[str, Any]:
        body = {"card": proof, "consume_password": old, "new_password": new}
        return self._post("/v1/kiosk/card/consume-password", body)

    def set_limit(self, proof: dict[str, Any], limit_fen: int, pin: str) -> dict[str, Any]:
        body = {"card": proof, "consume_password": pin, "limit_fen": limit_fen}
        return self._post("/v1/kiosk/card/limit", body)

    def pull_transition(self, proof: dict[str, Any]) -> dict[str, Any]:
        return self._post("/v1/kiosk/card/transition", {"card": proof})

    def correction(self, proof: dict[str, Any]) -> dict[str, Any]:
        return self._post("/v1/kiosk/card/correction", {"card": proof})

    # -- without the card (R10, R17) ----------------------------------------------------------
    def holder_status(self, action: str, number: str, password: str) -> dict[str, Any]:
        return self._post(f"/v1/holder/{action}", {"number": number, "password": password}, False)

    def as_holder(
        self, number: str, password: str, fn: Callable[[ServerClient], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run ``fn`` in a holder session opened with number + query password, then close it."""
        login = self._post("/v1/app/login", {"number": number, "password": password}, False)
        session = self.holder_client(str(login["token"]))
        try:
            return fn(session)
        finally:
            try:
                session.request("POST", "/v1/app/logout", signed=False)
            except ServerRefused:
                pass
            session.close()

    def found_cards(self, number: str, password: str) -> dict[str, Any]:
        return self.as_holder(
            number,
            password,
            lambda s: s.request("GET", "/v1/app/found-cards", signed=False),
        )

    def electricity(
        self, number: str, password: str, building: str, room: str, amount_fen: int, request_id: str
    ) -> dict[str, Any]:
        body = {
            "building": building,
            "room": room,
            "amount_fen": amount_fen,
            "request_id": request_id,
        }
        return self.as_holder(
            number,
            password,
            lambda s: s.request("POST", "/v1/app/electricity", body=body, signed=False),
        )

    # -- reissue (R11) ------------------------------------------------------------------------
    def reissue_quote(self, identity: dict[str, str]) -> dict[str, Any]:
        return self._post("/v1/kiosk/reissue/quote", dict(identity))

    def reissue(self, order_id: str, uid: str, identity: dict[str, str]) -> dict[str, Any]:
        return self._post("/v1/kiosk/reissue", {"order_id": order_id, "uid": uid, **identity})

    def reissue_done(self, order_id: str) -> dict[str, Any]:
        return self.client.request("POST", f"/v1/kiosk/reissue/{order_id}/done")
