"""``ykt sim fleet``: run the deterministic fleet simulator (docs/fleet.md)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sim.errors import SimUsageError
from sim.fleet.run import FAULT_KINDS, Options, Result, run_fleet
from sync.cmdline import Sub, command

SOAK_TERMINAL_DAYS = 10_000


def _faults(text: str) -> frozenset[str]:
    if text == "none":
        return frozenset()
    if text == "all":
        return frozenset(FAULT_KINDS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = kinds - set(FAULT_KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind {', '.join(sorted(unknown))} (kinds: {', '.join(FAULT_KINDS)})"
        )
    return kinds


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def replay_command(args: argparse.Namespace, seed: int) -> str:
    faults = "" if args.faults == frozenset(FAULT_KINDS) else f" --faults {_fault_text(args)}"
    return (
        f"ykt sim fleet --seed {seed} --terminals {args.terminals} --days {args.days}{faults}"
        " --trace fleet-trace.jsonl"
    )


def _fault_text(args: argparse.Namespace) -> str:
    return ",".join(k for k in FAULT_KINDS if k in args.faults) or "none"


def report_violation(args: argparse.Namespace, r: Result) -> None:
    first = r.violations[0]
    print(f"ykt sim fleet: seed {r.seed}: invariant {first['invariant']} violated", file=sys.stderr)
    print(f"  {first['detail']}", file=sys.stderr)
    print("  last events before it:", file=sys.stderr)
    for ev in r.last_events:
        print("    " + json.dumps(ev, ensure_ascii=False, default=str), file=sys.stderr)
    print(f"  replay: {replay_command(args, r.seed)}", file=sys.stderr)


def fleet(args: argparse.Namespace) -> int:
    if not args.verbose:  # the product's own warnings (pushes failing …) are the faults at work
        logging.disable(logging.CRITICAL)
    if args.soak:
        return soak(args)
    opts = Options(seed=args.seed, terminals=args.terminals, days=args.days, faults=args.faults)
    r = run_fleet(opts, args.trace)
    _print(args, r.summary())
    if r.violations:
        report_violation(args, r)
        return 1
    return 0


def soak(args: argparse.Namespace) -> int:
    """Seeds ``seed``, ``seed+1`` … of the given shape until :data:`SOAK_TERMINAL_DAYS`
    terminal-days have run; stops at the first violation."""
    if args.trace is not None:
        raise SimUsageError("--trace writes one run's events: replay one seed of the soak")
    started = time.monotonic()
    per_run = args.terminals * args.days
    runs = -(-SOAK_TERMINAL_DAYS // per_run)
    totals: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    digest = hashlib.sha256()
    out: dict[str, Any] = {}
    bad: Result | None = None
    for i in range(runs):
        opts = Options(args.seed + i, args.terminals, args.days, args.faults)
        r = run_fleet(opts)
        for k in ("terminal_days", "sales", "approved", "offline_approved"):
            totals[k] += int(getattr(r, k))
        faults.update(r.faults)
        digest.update(r.trace_hash.encode())
        if r.violations:
            bad = r
            break
    out = {
        "seed": args.seed,
        "seeds": f"{args.seed}..{args.seed + (i if runs else 0)}",
        "terminals": args.terminals,
        **dict(totals),
        "faults": dict(sorted(faults.items())),
        "violations": bad.violations if bad else [],
        "trace_hash": digest.hexdigest(),
        "seconds": round(time.monotonic() - started, 1),
    }
    _print(args, out)
    if bad is not None:
        report_violation(args, bad)
        return 1
    return 0


def _print(args: argparse.Namespace, obj: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False, default=str))
    else:
        print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def add_fleet_parser(cmds: Sub) -> None:
    c = command(
        cmds,
        "fleet",
        fleet,
        "run the deterministic fleet simulator: POS terminals and the server, in one process "
        "on virtual time, under injected faults, with the money invariants checked at every "
        "step; the same seed replays exactly (docs/fleet.md)",
    )
    c.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    c.add_argument("--terminals", type=_positive, default=10, help="POS terminals (default 10)")
    c.add_argument("--days", type=_positive, default=1, help="campus days (default 1)")
    c.add_argument(
        "--faults",
        type=_faults,
        default=frozenset(FAULT_KINDS),
        metavar="KIND,…|none",
        help=f"the faults to inject (default all: {', '.join(FAULT_KINDS)})",
    )
    c.add_argument("--trace", type=Path, help="write every event as JSON lines to this file")
    c.add_argument(
        "--soak",
        action="store_true",
        help=f"run seeds SEED, SEED+1 … of this shape until {SOAK_TERMINAL_DAYS:,} "
        "terminal-days have run (stops at the first violation)",
    )
    c.add_argument(
        "--verbose", action="store_true", help="let the product log (it is quiet by default)"
    )
