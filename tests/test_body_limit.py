"""Issue 10 item 18: request bodies have a size limit (1 MiB, sync/bodylimit.py).  A larger body
gets 413 ``too_large`` and is never buffered or parsed: a 150 MB login is answered before its
body is sent; a body sent in chunks is refused once it passes the limit.  Everything the system
itself sends stays under it (the terminal's journal batches, ``ykt admin roster import``)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from sync.bodylimit import MAX_BODY_BYTES
from tests.handterm import HandTerminal, error_of
from tests.helpers import ServerProc, id_card, ykt
from tests.live import Live


def test_a_2_mb_body_gets_413_and_a_body_under_the_limit_is_read(live: Live) -> None:
    big = {"number": "S1", "password": "123456", "pad": "x" * 2_000_000}
    resp = requests.post(live.url + "/v1/app/login", json=big, timeout=30)
    assert resp.status_code == 413, resp.text[:300]
    assert error_of(resp)["code"] == "too_large"
    # just under the limit: read, parsed, and refused for what it says (an unknown field)
    small = {"number": "S1", "password": "123456", "pad": "x" * (MAX_BODY_BYTES - 100)}
    resp = requests.post(live.url + "/v1/app/login", json=small, timeout=30)
    assert resp.status_code == 422, resp.text[:300]
    assert live.call("GET", "/v1/health").status_code == 200


def _raw(live: Live, head: bytes, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", live.port), timeout=timeout)
    s.sendall(head)
    return s


def _status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_150_mb_login_is_refused_before_its_body_is_sent(live: Live) -> None:
    """The server answers from the declared length: it does not wait for, buffer or parse
    150 MB (the old server waited here for the whole body)."""
    head = (
        b"POST /v1/app/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 150000000\r\n\r\n"
    )
    started = time.monotonic()
    s = _raw(live, head + b'{"number": "S1", "password": "1234')
    try:
        assert _status(s) == 413
    finally:
        s.close()
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_refused_once_it_passes_the_limit(live: Live) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"number": "S1", "password": "123456", "pad": "'
        for _ in range(40):  # 2.5 MiB in all, sent without a Content-Length
            yield b"x" * 65536
        yield b'"}'

    resp = requests.post(
        live.url + "/v1/app/login",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text[:300]
    assert error_of(resp)["code"] == "too_large"


def test_a_signed_terminal_request_over_the_limit_gets_413(live: Live) -> None:
    term = HandTerminal.enroll(live, "big-pos")
    body = json.dumps({"records": [{"body": "x" * 4000, "sig": "y"}] * 300}).encode()
    assert len(body) > MAX_BODY_BYTES
    resp = term.push_raw(body)
    assert resp.status_code == 413, resp.text[:300]
    term.close()


def test_a_large_roster_is_imported_in_parts_with_the_right_line_numbers(
    server: ServerProc, tmp_path: Path
) -> None:
    """``ykt admin roster import`` sends a roster larger than the server reads at once in
    parts; a bad line is reported with its line number in the whole file."""
    rows = ["number,name,type,id_card"]
    rows += [f"BAD{i:06d},名字{i},student,not-an-id-card-{i:08d}" for i in range(25_000)]
    rows += [f"OK1,张三,student,{id_card(1)}", f"OK2,李四,staff,{id_card(2)}", "OK3,王五,x,y"]
    path = tmp_path / "roster.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert path.stat().st_size > MAX_BODY_BYTES
    admin = ("admin", "--server", server.url, "--token-file", str(server.token_file))
    out = json.loads(ykt(*admin, "roster", "import", str(path), "--json", timeout=120).stdout)
    assert out["added"] == 2
    assert len(out["errors"]) == 25_001
    assert out["errors"][0]["line"] == 2
    assert out["errors"][-1]["line"] == 25_004  # OK3: the last line of the file
    assert [e["line"] for e in out["errors"]] == sorted(e["line"] for e in out["errors"])
    shown = server.admin_call("GET", "/v1/admin/accounts/OK2")
    assert shown["type"] == "staff"
