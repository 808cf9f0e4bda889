"""Replay nonces are claimed in groups (one commit for the claims that arrive together,
sync/server/terminals.py NonceCache): each nonce is still admitted exactly once, whichever
thread's group writes it, and a failed group fails every claim in it (in process, on both
databases)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.server.context import Context
from sync.server.terminals import NonceCache, _Claim
from tests.inproc import make_context


@pytest.fixture
def ctx(tmp_path: Path, db_kind: str) -> Iterator[Context]:
    c = make_context(tmp_path / "srv")
    yield c
    c.db.close()


def test_each_nonce_is_admitted_once_under_concurrent_claims(ctx: Context) -> None:
    cache = NonceCache(ctx, 60_000)
    now = ctx.now_ms()
    # 8 threads claim the same 50 nonces (and 50 of their own) at once
    start = threading.Barrier(8, timeout=10)
    got: dict[int, list[bool]] = {}
    errors: list[BaseException] = []

    def claims(w: int) -> None:
        try:
            start.wait()
            got[w] = [cache.claim("T1", f"shared-{i}", now, now) for i in range(50)]
            got[w] += [cache.claim("T1", f"own-{w}-{i}", now, now) for i in range(50)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claims, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    for i in range(50):  # every shared nonce admitted by exactly one thread
        assert sum(got[w][i] for w in range(8)) == 1
    assert all(all(got[w][50:]) for w in range(8))  # every own nonce admitted
    n = ctx.db.one("SELECT COUNT(*) AS n FROM nonces WHERE terminal_id = 'T1'")
    assert n is not None and int(n["n"]) == 50 + 8 * 50
    assert cache.claim("T1", "shared-0", now, now) is False  # a replay, later, refused


def test_a_failed_group_fails_its_claims(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = NonceCache(ctx, 60_000)
    now = ctx.now_ms()

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(ctx.db, "tx", broken)
    with pytest.raises(RuntimeError, match="database gone"):
        cache.claim("T1", "n1", now, now)
    monkeypatch.undo()
    assert cache.claim("T1", "n1", now, now) is True  # nothing was written: admitted now


def test_a_nonce_twice_in_one_group_is_admitted_once(ctx: Context) -> None:
    """A group's claims are one INSERT: a replay sent in parallel with its original (both in
    the same group) and a nonce seen before are refused, each other nonce admitted."""
    cache = NonceCache(ctx, 60_000)
    now = ctx.now_ms()
    assert cache.claim("T1", "seen", now, now) is True
    group = [
        _Claim("T1", "n1", now),
        _Claim("T1", "n1", now),  # the same request again
        _Claim("T2", "n1", now),  # another terminal's nonce may be the same string
        _Claim("T1", "seen", now),
        _Claim("T1", "n2", now),
    ]
    cache._write(group, None)
    assert [c.result for c in group] == [True, False, True, False, True]
    assert all(c.error is None for c in group)
