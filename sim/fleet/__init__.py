"""The deterministic fleet simulator (``ykt sim fleet``, docs/fleet.md).

The real terminal code (POS engine and deciders, journal, cache, uplink steps, the signed
client) and the real server services run in one process, on one virtual clock and one seeded
RNG, over a simulated network that loses, duplicates, delays and reorders requests, while
terminals and the server crash, restart and are restored from backups.  Invariants are
checked after every step and after a final heal phase; a seed replays exactly.

Modules: :mod:`.determinism` (seeded ``secrets``/``os.urandom``), :mod:`.server` (the server's
services behind the terminal routes), :mod:`.net` (the network and its faults),
:mod:`.terminal` (one POS on its files), :mod:`.campus` (people: cards, phones, desk),
:mod:`.invariants` (the checkers, pure functions), :mod:`.run` (the day loop, the event log,
the trace hash), :mod:`.cli` (``ykt sim fleet``).
"""
