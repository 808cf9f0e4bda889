"""The uplink (edge/uplink.py) one step at a time against a fake server: batches and acks,
rewinding after a server restored from a backup, backoff, unavailable versus refused."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from edge.journal import PUSH_MAX_BYTES
from edge.uplink import Backoff, Retry, Uplink
from sync.bodylimit import MAX_BODY_BYTES
from tests.unit.fakes import CARD_ACCT, World, error


@pytest.fixture
def w(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.offline()
    return world


def sell(w: World, n: int) -> None:
    """``n`` offline sales (the server is out of reach meanwhile)."""
    down, online = w.server.down, w.link.online
    w.offline()
    for _ in range(n):
        assert w.tap(100).approved
    w.server.down = down
    if online:
        w.link.up()


def drain(up: Uplink, w: World, backoff: Backoff) -> int:
    """Push until the queue is empty; the number of pushes."""
    pushes = 0
    while w.journal.queued:
        assert up.push_batch(w.client, backoff) is None
        pushes += 1
    return pushes


def test_batches_until_the_queue_is_empty(w: World) -> None:
    sell(w, 5)
    w.server.down = False
    up = w.uplink(batch=2)
    assert drain(up, w, Backoff(random.Random(1))) == 3
    assert [r.seq for r in w.server.applied] == [1, 2, 3, 4, 5]
    assert (w.journal.acked, w.journal.unsynced_offline_fen) == (5, 0)
    assert w.link.online and up.last_push_error == ""


def test_an_unavailable_server_backs_off_and_marks_the_link_down(w: World) -> None:
    sell(w, 1)
    up = w.uplink()
    w.link.up()
    backoff = Backoff(random.Random(1))
    delays = []
    for _ in range(3):
        retry = up.push_batch(w.client, backoff)
        assert isinstance(retry, Retry) and retry.early  # a new sale retries at once
        delays.append(retry.delay)
    assert 0.125 <= delays[0] <= 0.25 < delays[1] <= 0.5 < delays[2] <= 1.0  # 2ⁿ with jitter
    assert not w.link.online and "ConnectionError: refused" in up.last_push_error
    assert w.journal.acked == 0
    w.server.down = False
    assert up.push_batch(w.client, backoff) is None
    assert backoff.n == 0 and w.journal.acked == 1 and w.link.online


def test_a_5xx_is_unavailable_too(w: World) -> None:
    sell(w, 1)
    w.online()
    w.server.failing = error(503, "store_unavailable")
    retry = w.uplink().push_batch(w.client, Backoff(random.Random(1)))
    assert retry is not None and not w.link.online


def test_a_refusal_backs_off_but_the_link_stays_up(w: World) -> None:
    sell(w, 1)
    w.online()
    w.server.failing = error(422, "bad_record", "record 0: not canonical")
    up = w.uplink()
    retry = up.push_batch(w.client, Backoff(random.Random(1)))
    assert retry is not None and retry.early
    assert w.link.online  # the server answered
    assert "bad_record" in up.last_push_error and w.journal.acked == 0


def test_records_lost_by_a_restored_server_are_sent_again(w: World) -> None:
    sell(w, 5)
    w.server.down = False
    up = w.uplink()
    backoff = Backoff(random.Random(1))
    drain(up, w, backoff)
    assert w.journal.acked == 5
    # the server's database is restored from a backup taken after record 2
    w.server.head = 2
    del w.server.applied[2:]
    sell(w, 1)
    assert up.push_batch(w.client, backoff) is None  # ack 2 < 5: rewound
    assert (w.journal.acked, w.journal.queued) == (2, 4)
    assert w.journal.unsynced_offline_fen == 400  # the money is at risk again
    drain(up, w, backoff)
    assert [r.seq for r in w.server.applied] == [1, 2, 3, 4, 5, 6]
    assert w.journal.acked == 6


def test_an_ack_that_does_not_move_waits(w: World) -> None:
    sell(w, 2)
    w.server.down = False
    gap = {"kind": "journal_gap", "detail": "record 1 is missing"}
    w.server.failing = 200, {"ack": 0, "pending": 2, "alarms": [gap]}
    up = w.uplink()
    retry = up.push_batch(w.client, Backoff(random.Random(1)))
    assert retry is not None and not retry.early  # only time (or stop) ends this wait
    assert "did not advance" in up.last_push_error and "journal_gap" in up.last_push_error
    assert w.journal.acked == 0


def test_an_ack_beyond_the_journal_is_reported(w: World) -> None:
    sell(w, 1)
    w.server.down = False
    w.server.head = 9  # another terminal's journal, or ours replaced
    up = w.uplink()
    retry = up.push_batch(w.client, Backoff(random.Random(1)))
    assert retry is not None and "bad ack" in up.last_push_error
    assert w.journal.acked == 0


# --- the feed -----------------------------------------------------------------------------------
def test_a_feed_page_reaches_the_cache(w: World) -> None:
    w.server.down = False
    row = {**w.account_row(CARD_ACCT), "status": "frozen", "version": 2}
    w.server.pages.append({"version": 2, "accounts": [row], "policy": {"pin_max_tries": 5}})
    up = w.uplink()
    assert up.pull_page(w.client, Backoff(random.Random(1))) is None
    acct = w.cache.account(CARD_ACCT)
    assert acct is not None and acct.status == "frozen"
    assert (w.cache.version, w.cache.policy.pin_max_tries) == (2, 5)
    assert w.link.online
    assert up._kick.is_set()  # back online: the queue is pushed now


def test_a_feed_ack_below_ours_rewinds_the_journal(w: World) -> None:
    sell(w, 3)
    w.server.down = False
    up = w.uplink()
    drain(up, w, Backoff(random.Random(1)))
    w.server.head = 1
    w.server.pages.append({"version": 2})
    assert up.pull_page(w.client, Backoff(random.Random(1))) is None
    assert (w.journal.acked, w.journal.queued) == (1, 2)


def test_a_failed_pull_backs_off_and_a_bad_page_is_not_stored(w: World) -> None:
    up = w.uplink()
    retry = up.pull_page(w.client, Backoff(random.Random(1)))
    assert retry is not None and retry.early and not w.link.online
    w.server.down = False
    w.server.pages.append({"version": 5, "policy": {"pin_max_tries": "three"}})
    retry = up.pull_page(w.client, Backoff(random.Random(1)))
    assert retry is not None and not retry.early
    assert w.cache.version == 1 and w.cache.policy.pin_max_tries == 3


def test_a_feed_stream_stores_each_page_as_it_comes(w: World) -> None:
    """Online, the uplink holds a stream (``stream=1``): every page on it reaches the cache,
    and the stream is one request."""
    w.server.down = False
    w.link.up()
    frozen = {**w.account_row(CARD_ACCT), "status": "frozen", "version": 2}
    lost = {**w.account_row(CARD_ACCT), "status": "lost", "version": 3}
    w.server.pages += [{"version": 2, "accounts": [frozen]}, {"version": 3, "accounts": [lost]}]
    up = w.uplink()
    seen: list[int] = []
    w.cache.apply = _spy(w.cache.apply, seen)  # type: ignore[method-assign]
    assert up.pull_stream(w.client, Backoff(random.Random(1))) is None
    assert seen == [2, 3, 3]  # the two pages, then the last one at the end of its wait
    acct = w.cache.account(CARD_ACCT)
    assert acct is not None and acct.status == "lost" and w.cache.version == 3
    assert w.server.paths() == ["/v1/feed"]


def test_a_stream_broken_midway_keeps_the_pages_before_it(w: World) -> None:
    sell(w, 3)
    w.server.down = False
    w.link.up()
    up = w.uplink()
    drain(up, w, Backoff(random.Random(1)))
    w.server.head = 1  # restored from a backup: the stream's page acks below ours
    w.server.garbage = True
    w.server.pages.append({"version": 2})
    retry = up.pull_stream(w.client, Backoff(random.Random(1)))
    assert retry is not None and retry.early and not w.link.online
    assert w.cache.version == 2
    assert (w.journal.acked, w.journal.queued) == (1, 2)  # the first page's ack was taken
    w.server.down = True
    assert up.pull_stream(w.client, Backoff(random.Random(1))) is not None


def _spy(apply: Any, seen: list[int]) -> Any:
    def spied(page: Any) -> Any:
        seen.append(page.version)
        return apply(page)

    return spied


def test_a_batch_stays_under_the_servers_request_limit(w: World) -> None:
    """Issue 10 item 18: the server refuses a body over 1 MiB; a batch holds at most
    ``PUSH_MAX_BYTES`` of records (always one), so big records never block the push."""
    sell(w, 6)
    sizes = [
        len(json.dumps(r["body"], ensure_ascii=False).encode()) + len(r["sig"]) + 20
        for r in w.journal.unsent(100)
    ]
    assert len(w.journal.unsent(100, max_bytes=sum(sizes[:3]))) == 3
    assert len(w.journal.unsent(100, max_bytes=1)) == 1
    assert len(w.journal.unsent(100)) == 6 and PUSH_MAX_BYTES <= MAX_BODY_BYTES // 2
    w.server.down = False
    up = w.uplink(batch=100)
    budget = max(sizes) * 2
    up.journal.unsent = functools.partial(w.journal.unsent, max_bytes=budget)  # type: ignore[method-assign]
    assert drain(up, w, Backoff(random.Random(1))) == 3
    assert w.journal.acked == 6
