"""The feed at a lunch peak (docs/benchmarks.md, peak): the pages of one wake share their common
part (:class:`sync.server.feed.FeedShare`), and a plain sale wakes no parked long-poll while a
status change does (:class:`sync.server.context.Notifier`)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from sync.records import to_json
from sync.server import accounts, context, feed, hot
from sync.server.api_auth import ApiAuth
from sync.server.context import POLL_S, Context, Notifier, next_version
from tests.helpers import id_card
from tests.inproc import InProcTerminal, make_context


def _world(tmp_path: Path) -> tuple[Context, list[InProcTerminal], list[int]]:
    ctx = make_context(tmp_path / "server")
    terms = [InProcTerminal(ctx, name=f"pos{n}", seed=10 + n) for n in range(3)]
    ids = []
    for n in range(1, 4):
        acct = accounts.add_account(
            ctx, number=f"S{n}", name="n", type="student", id_card=id_card(n)
        )
        accounts.topup(ctx, f"S{n}", 10_000, "cash")
        ids.append(int(acct["id"]))
    terms[0].push([terms[0].record(ids[0], 100)])  # its ack moves; the others' do not
    return ctx, terms, ids


def _page(
    share: feed.FeedShare, ctx: Context, row: dict[str, Any], since: int, page: int = feed.PAGE
) -> Any:
    """One terminal's page through the share (a batch of one)."""
    got = share.pages(ctx, [(row, since)], page)[0]
    assert got is not None  # the terminal is active
    return got


def _own(page: dict[str, Any]) -> dict[str, Any]:
    """A page without the fields each answer has of its own (the server's time)."""
    return {k: v for k, v in page.items() if k != "server_time_ms"}


def test_shared_pages_are_each_terminals_own_page(tmp_path: Path) -> None:
    ctx, terms, ids = _world(tmp_path)
    share = feed.FeedShare()
    pages = [to_json(_page(share, ctx, t.row, 0)) for t in terms]
    assert share.computed == 1  # one key: the same since, version, merchant and role
    for t, page in zip(terms, pages, strict=True):
        assert _own(page) == _own(to_json(feed.delta(ctx, t.row, 0)))
    assert [p["ack"] for p in pages] == [1, 0, 0]
    assert len({p["codes"]["proof_key"] for p in pages}) == 3  # each terminal's own key
    assert {a["id"] for a in pages[1]["accounts"]} == set(ids)
    # what changes after a part was read comes in the next page, from that page's version
    since = pages[1]["version"]
    accounts.change_status(ctx, "S2", "report-loss")
    nxt = to_json(_page(share, ctx, terms[1].row, since))
    assert share.computed == 2
    assert [(a["number"], a["status"]) for a in nxt["accounts"]] == [("S2", "lost")]
    assert _own(nxt) == _own(to_json(feed.delta(ctx, terms[1].row, since)))
    # the same page asked again comes from the part already read
    assert _own(to_json(_page(share, ctx, terms[2].row, since))) == _own(
        to_json(feed.delta(ctx, terms[2].row, since))
    )
    assert share.computed == 2


def test_one_read_from_the_lowest_since_serves_the_later_ones(tmp_path: Path) -> None:
    ctx, terms, _ids = _world(tmp_path)
    top = int(to_json(feed.delta(ctx, terms[0].row, 0))["version"])
    share = feed.FeedShare()
    order = [top - 2, top - 4, top - 1, top - 3, 0, top, 2, top - 4]
    for n, since in enumerate(order):
        t = terms[n % 3]
        assert _own(to_json(_page(share, ctx, t.row, since))) == _own(
            to_json(feed.delta(ctx, t.row, since))
        ), since
    assert share.computed == 3  # each new lowest since: top - 2, top - 4, 0
    # a page cut (more rows than fit) is read for itself, whole pages as before
    cut = to_json(_page(share, ctx, terms[1].row, 0, page=1))
    assert cut["more"] and cut == {
        **to_json(feed.delta(ctx, terms[1].row, 0, page=1)),
        "server_time_ms": cut["server_time_ms"],
    }


def test_a_plain_sale_wakes_no_long_poll_a_status_change_does(tmp_path: Path) -> None:
    ctx, terms, ids = _world(tmp_path)
    notifier = ctx.notifier

    async def woken(timeout: float) -> bool:
        gen = notifier.generation
        await notifier.wait(gen, timeout)
        return notifier.generation != gen

    async def main() -> None:
        loop = asyncio.get_running_loop()
        notifier.bind(loop)
        try:
            await asyncio.sleep(2 * POLL_S)  # the watcher has looked
            # a plain sale (ingest: balances only) moves the version and wakes nobody, not
            # even at the watcher's later looks
            sale = asyncio.create_task(woken(8 * POLL_S))
            await asyncio.sleep(0)
            await asyncio.to_thread(terms[1].push, [terms[1].record(ids[1], 50)])
            assert not await sale
            # a status change wakes at once
            loss = asyncio.create_task(woken(5.0))
            await asyncio.sleep(0)
            t0 = loop.time()
            await asyncio.to_thread(accounts.change_status, ctx, "S3", "report-loss")
            assert await loss
            assert loop.time() - t0 < 1.0
            if ctx.db.can_listen():
                return  # PostgreSQL: another process's change wakes by NOTIFY
            # SQLite: a move this process did not make (another process's) wakes by the watcher
            # (which also wakes once more, coalesced, for the status change: let that pass)
            await asyncio.sleep(4 * POLL_S)
            other = asyncio.create_task(woken(5.0))
            await asyncio.sleep(0)
            with ctx.db.tx() as tx:
                next_version(tx)
            assert await other
        finally:
            await notifier.unbind()

    asyncio.run(main())


def test_a_read_begun_before_a_later_wake_does_not_lower_the_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The versions read after two wakes close together (two loss reports) end in the other
    order: the first wake's read (version 10) after the second's (20).  A terminal whose page
    is at 15 has not seen what the second wake was for: it still has news
    (:meth:`sync.server.context.Notifier.news_for`)."""
    ctx = make_context(tmp_path)
    notifier = Notifier()
    gates = [threading.Event(), threading.Event()]
    values = iter([(gates[0], 10), (gates[1], 20)])

    def slow_version(db: object) -> int:
        gate, value = next(values)
        assert gate.wait(10)
        return value

    monkeypatch.setattr(context, "current_version", slow_version)

    async def woken() -> int:
        gen = notifier.generation
        notifier.notify()  # no database attached: this process's wake only
        while notifier.generation == gen:
            await asyncio.sleep(0.001)
        return notifier.generation

    async def main() -> None:
        notifier.bind(asyncio.get_running_loop())
        await woken()
        first = asyncio.ensure_future(notifier.version(ctx.db))  # the first wake's read
        await asyncio.sleep(0.01)
        await woken()
        second = asyncio.ensure_future(notifier.version(ctx.db))  # the second wake's
        gates[1].set()
        assert await second == 20
        gates[0].set()
        assert await first == 10
        assert notifier.news_for(15, 20)
        assert not notifier.news_for(20, 20)

    try:
        asyncio.run(main())
    finally:
        for gate in gates:
            gate.set()
        ctx.db.close()


def test_the_pages_asked_together_are_built_in_batches(tmp_path: Path) -> None:
    """A wake releases the parked requests a chunk a turn of the event loop; their pages are
    built together, a batch a job (one statement for the terminals' rows: PAGE_BATCH on a
    worker thread, INLINE_BATCH where the database work runs on the loop), each still its
    own terminal's page (``LongPoll._page``)."""
    ctx, terms, ids = _world(tmp_path)
    jobs: list[int] = []

    async def run(fn: Any, *args: Any) -> Any:
        jobs.append(1)
        return fn(*args)

    poll = hot.LongPoll(ctx, cast(ApiAuth, SimpleNamespace(feed_thread=run)))
    asks = [terms[n % 3] for n in range(hot.PAGE_BATCH + 20)]

    async def main() -> list[tuple[bytes, int]]:
        return await asyncio.gather(*(poll._page(t.row, 0, run) for t in asks))

    got = asyncio.run(main())
    size = hot.INLINE_BATCH if ctx.db.writes_inline() else hot.PAGE_BATCH
    assert len(jobs) == -(-len(asks) // size)  # PostgreSQL: PAGE_BATCH, then the 20 left
    for t, (body, version) in zip(asks, got, strict=True):
        page = json.loads(body)
        assert page["version"] == version
        assert _own(page) == _own(to_json(feed.delta(ctx, t.row, 0)))
    assert [json.loads(got[n][0])["ack"] for n in range(3)] == [1, 0, 0]
    # a terminal without a row (the data replaced): its page has no ack, the others theirs
    ghost = {**terms[1].row, "id": "no-such-terminal"}
    jobs.clear()

    async def mixed() -> list[tuple[bytes, int]]:
        return list(
            await asyncio.gather(poll._page(terms[0].row, 0, run), poll._page(ghost, 0, run))
        )

    (mine, _), (theirs, _) = asyncio.run(mixed())
    assert len(jobs) == 1
    assert json.loads(mine)["ack"] == 1 and json.loads(theirs)["ack"] == 0
    assert {a["id"] for a in json.loads(theirs)["accounts"]} == set(ids)


async def _quiet_pages(
    poll: hot.LongPoll, row: dict[str, Any], since: int, wait: float, run: Any
) -> list[float]:
    """The loop's time at each page of a stream from ``since`` while nothing changes (each
    page checked quiet), until the stream ends."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()
    at = []
    async for body in poll.pages(hot.FeedAsk(row, since, wait, None, None), gone, run):
        assert json.loads(body)["accounts"] == []  # no news: quiet pages
        at.append(loop.time())
    return at


def test_a_stream_goes_on_after_a_quiet_wait_and_ends_within_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream sends a page whenever a wait passes without news and goes on (a stream ended
    there came back with every other one just before the next wake), until its length, a
    random part of the later quarter of MAX_STREAM_S (streams opened together are renewed
    apart); with ``wait`` 0 it is one page."""
    ctx, terms, _ = _world(tmp_path)

    async def run(fn: Any, *args: Any) -> Any:
        return fn(*args)

    poll = hot.LongPoll(ctx, cast(ApiAuth, SimpleNamespace(feed_thread=run)))
    monkeypatch.setattr(hot, "MAX_STREAM_S", 2.0)
    since = feed.delta(ctx, terms[1].row, 0).version

    async def hold(wait: float) -> list[float]:
        t0 = asyncio.get_running_loop().time()
        return [at - t0 for at in await _quiet_pages(poll, terms[1].row, since, wait, run)]

    at = asyncio.run(hold(0.4))
    gaps = [b - a for a, b in zip([0.0, *at], at, strict=False)]
    assert len(at) >= 4  # (2 s at most, a page every 0.2–0.4 s)
    assert all((1 - hot.WAIT_SPREAD) * 0.4 * 0.9 <= g < 0.4 + 0.3 for g in gaps), gaps
    assert (1 - hot.STREAM_SPREAD) * 2.0 * 0.95 <= at[-1] < 2.0 + 0.3, at
    assert len(asyncio.run(hold(0.0))) == 1


def test_quiet_pages_of_waits_ending_within_a_tick_are_built_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams' waits (and their ends) fall on a tick of the loop's clock (hot.WAIT_TICK_S):
    the quiet pages of the waits that end within one tick are built as one batch, from one
    read of what they share, not one batch and one read each (a lunch peak: the streams a
    wake began together sent 100 quiet pages a second before the next report)."""
    ctx, terms, _ = _world(tmp_path)
    batches: list[Any] = []  # each job run: one batch of pages

    async def run(fn: Any, *args: Any) -> Any:
        batches.append(fn)
        return fn(*args)

    poll = hot.LongPoll(ctx, cast(ApiAuth, SimpleNamespace(feed_thread=run)))
    monkeypatch.setattr(hot, "MAX_STREAM_S", 1.0)
    since = feed.delta(ctx, terms[1].row, 0).version

    async def streams() -> list[list[float]]:
        held = (_quiet_pages(poll, terms[n % 3].row, since, 0.4, run) for n in range(30))
        return list(await asyncio.gather(*held))

    pages = [at for got in asyncio.run(streams()) for at in got]
    assert len(pages) >= 60  # each stream: a quiet page every 0.2–0.4 s for 0.75–1 s
    ticks = {round(at / hot.WAIT_TICK_S) for at in pages}
    assert len(ticks) <= 6, sorted(ticks)  # (5 in 1.25 s; one more for a late loop)
    assert len(batches) <= 2 * len(ticks), (len(batches), len(pages))
    # (a random end each: a batch and a read for nearly every page)
