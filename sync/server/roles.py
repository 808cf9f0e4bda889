"""Who may call what, for terminals: the one table of terminal roles × endpoints and of the
journal record kinds each role may write (docs/security.md, "Who may call what").

Every route that takes a signed terminal request names itself here ("METHOD /path template");
:meth:`sync.server.api_auth.ApiAuth.terminal` refuses a role the table does not list for the
route with 403 ``wrong_role``, and a route missing from the table refuses every role (a new
terminal route is closed until it is written down here).  Journal ingest accepts from a role
only the (kind, method) pairs of :data:`RECORDS`.  ``tests/test_access.py`` tries every cell of
both tables, and checks that every terminal route of the app is in :data:`ENDPOINTS`.

Staff permissions are the other table (:mod:`sync.server.staff`); card holders act only on
their own account (:mod:`sync.server.holder_ops`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync.server.errors import Forbidden

POS, KIOSK, GATE = "pos", "kiosk", "gate"
ROLES = (POS, KIOSK, GATE)

#: route ("METHOD /path template") → the terminal roles that may call it
ENDPOINTS: dict[str, frozenset[str]] = {
    # the card keys of the caller's own role (sync.card.keys: a gate reads identities only)
    "GET /v1/terminals/keystore": frozenset({POS, KIOSK, GATE}),
    # selling: online authorization, the journal, the delta feed it decides offline with
    "POST /v1/pos/authorize": frozenset({POS}),
    "POST /v1/journal": frozenset({POS}),
    # a kiosk pulls it too: the hotlist, policy (the reissue fee) and account snapshots, to
    # refuse a lost card and say the fee while the server is unreachable (no operators: those
    # go to the terminals of a merchant that sell, sync.server.feed)
    "GET /v1/feed": frozenset({POS, KIOSK}),
    # the report of a closed shift at the till (sync.server.merchants)
    "POST /v1/pos/shift": frozenset({POS}),
    # R18 authentication codes: who it is, whether to open (uses the code up)
    "POST /v1/codes/verify": frozenset({GATE}),
    # card-present operations at a self-service kiosk (R20, R4-R6, R11, R17)
    "POST /v1/kiosk/card": frozenset({KIOSK}),
    "POST /v1/kiosk/card/query-password": frozenset({KIOSK}),
    "POST /v1/kiosk/card/consume-password": frozenset({KIOSK}),
    "POST /v1/kiosk/card/limit": frozenset({KIOSK}),
    "POST /v1/kiosk/card/correction": frozenset({KIOSK}),
    "POST /v1/kiosk/card/transition": frozenset({KIOSK}),
    "POST /v1/kiosk/found-cards": frozenset({KIOSK}),
    "POST /v1/kiosk/reissue/quote": frozenset({KIOSK}),
    "POST /v1/kiosk/reissue": frozenset({KIOSK}),
    "POST /v1/kiosk/reissue/{order_id}/done": frozenset({KIOSK}),
}

#: role → the journal records (kind, method) it may write (sync.records: KINDS × METHODS)
RECORDS: dict[str, frozenset[tuple[str, str]]] = {
    POS: frozenset(
        {
            ("sale", "card"),
            ("sale", "qr-forward"),
            ("sale", "qr-reverse"),
            ("pin_fail", "card"),
            ("void", "qr-reverse"),  # a reverse-scan request closed without a sale (R14)
            # a refund at the till of one of its own sales (sync.server.posrefund)
            ("refund", "card"),
            ("refund", "qr-forward"),
            ("refund", "qr-reverse"),
        }
    ),
    KIOSK: frozenset(),  # kiosks act online; they move no money by journal
    GATE: frozenset(),
}


def may_call(role: str, endpoint: str) -> bool:
    return role in ENDPOINTS.get(endpoint, frozenset())


def require(terminal: Mapping[str, Any], endpoint: str) -> None:
    """403 ``wrong_role`` unless the terminal's role may call ``endpoint``."""
    if not may_call(str(terminal["role"]), endpoint):
        raise Forbidden(f"a {terminal['role']} terminal cannot call {endpoint}", "wrong_role")


def may_write(role: str, kind: str, method: str) -> bool:
    return (kind, method) in RECORDS.get(role, frozenset())
