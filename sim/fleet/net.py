"""The simulated network between the terminals and the server: a transport per terminal
(:class:`sync.client.Transport`) that hands the request to :class:`SimServer` in-process.

Faults, drawn from the run's RNG: the terminal (or every terminal: the server) cut off
(``partition``); a request lost on the way, or its answer lost after the server applied it
(``loss``); a request delivered twice (``duplicate``); a request held back and delivered
minutes later, after newer ones (``delay``; counted again as ``reorder`` when a newer request of
the same terminal got there first).  The server's answers are real: a duplicate or a late copy
meets the replay and freshness checks like any other request.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.fleet.server import SimServer
from sync.client import Request, Response, Streamed


class Crash(BaseException):
    """A terminal process dies at this instant (BaseException: no ``except Exception`` of the
    product catches it; it unwinds like a kill)."""


@dataclass
class Rates:
    """Per-request fault probabilities."""

    loss: float = 0.02
    duplicate: float = 0.01
    delay: float = 0.01

    @classmethod
    def none(cls) -> Rates:
        return cls(0.0, 0.0, 0.0)


@dataclass
class Late:
    due_ms: int
    order: int
    terminal: str
    request: Request


@dataclass
class Net:
    server: SimServer
    rng: random.Random
    now: Callable[[], int]
    rates: Rates
    faults: Counter[str]
    log: Callable[..., None]
    cut: set[str] = field(default_factory=set)
    late: list[Late] = field(default_factory=list)
    sent: int = 0
    last_delivered: dict[str, int] = field(default_factory=dict)
    #: terminals whose journal push reached the server since the invariants last looked (only
    #: a push moves the server's head of a terminal; a restore moves them all)
    pushed: set[str] = field(default_factory=set)

    def transport(self, terminal: str, crash_hook: Callable[[str], None]) -> SimTransport:
        return SimTransport(self, terminal, crash_hook)

    def deliver(self, terminal: str, order: int, req: Request) -> tuple[int, bytes]:
        if order < self.last_delivered.get(terminal, -1):
            self.faults["reorder"] += 1
        self.last_delivered[terminal] = max(order, self.last_delivered.get(terminal, -1))
        if req.path == "/v1/journal":
            self.pushed.add(terminal)
        return self.server.handle(req.method, req.target, dict(req.headers), req.content)

    def tick(self) -> None:
        """Deliver the held-back requests that are due (their answers go nowhere)."""
        if not self.late:
            return
        now = self.now()
        due = [x for x in self.late if x.due_ms <= now]
        if not due:
            return
        self.late = [x for x in self.late if x.due_ms > now]
        for x in due:
            if self.server.up and x.terminal not in self.cut:
                status, _ = self.deliver(x.terminal, x.order, x.request)
                self.log("net.late", t=x.terminal, path=x.request.path, status=status)

    def heal(self) -> None:
        self.cut.clear()
        self.rates = Rates.none()
        self.late.clear()


class SimTransport:
    def __init__(self, net: Net, terminal: str, crash_hook: Callable[[str], None]) -> None:
        self.net, self.terminal, self.crash_hook = net, terminal, crash_hook

    def send(self, request: Request) -> Response:
        net = self.net
        self.crash_hook("send")
        if not net.server.up or self.terminal in net.cut:
            raise ConnectionError("no route to the server")
        net.sent += 1
        order = net.sent
        r, rates = net.rng.random(), net.rates
        if r < rates.loss / 2:
            net.faults["loss"] += 1
            raise ConnectionError("request lost")
        r -= rates.loss / 2
        if r < rates.delay:
            net.faults["delay"] += 1
            due = net.now() + net.rng.randrange(1_000, 300_000)
            net.late.append(Late(due, order, self.terminal, request))
            raise TimeoutError("no answer (the request is still on its way)")
        r -= rates.delay
        status, body = net.deliver(self.terminal, order, request)
        if r < rates.duplicate:
            net.faults["duplicate"] += 1
            again, _ = net.deliver(self.terminal, order, request)
            net.log("net.dup", t=self.terminal, path=request.path, status=again)
        r -= rates.duplicate
        self.crash_hook("answer")  # the process may die with the answer on its way
        if r < rates.loss / 2:
            net.faults["loss"] += 1
            raise TimeoutError("answer lost after the server applied the request")
        return Response(status, body)

    def stream(self, request: Request) -> Streamed:
        return Streamed.of(self.send(request))  # the simulated server answers whole

    def close(self) -> None:
        pass
