"""``ykt sim chaos``: the real-process chaos run (:mod:`sim.chaos.run`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from sim.chaos.run import ChaosConfig, run_chaos
from sync.cmdline import Sub, command


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text}")
        return value

    return parse


def chaos(args: argparse.Namespace) -> int:
    cfg = ChaosConfig(
        seconds=args.seconds, terminals=args.terminals, seed=args.seed, dir=args.dir, db=args.db
    )
    out = run_chaos(cfg)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(
            f"chaos seed {out['seed']}: {out['terminals']} terminals, {out['seconds']:g}s of "
            f"faults, {out['elapsed_s']}s in all, server on {out.get('db', 'sqlite')}"
        )
        print(
            f"  sales {out['sales']}: approved {out['approved']} ({out['offline_approved']} "
            f"offline), declined {out['declined']}, in doubt {out['in_doubt']}"
        )
        print(f"  chaos {out['chaos']}")
        print(f"  proxy {out['proxy']}")
        print(f"  checked {out['checked']}")
    if out["violations"]:
        print(
            f"ykt sim chaos: {len(out['violations'])} violation(s), seed {out['seed']}; "
            f"logs, events.log and sales.jsonl kept in {out['dir']}",
            file=sys.stderr,
        )
        for v in out["violations"]:
            print(f"  {v['invariant']}: {v['detail']}", file=sys.stderr)
            if v.get("evidence") is not None:
                print(
                    f"    evidence: {json.dumps(v['evidence'], ensure_ascii=False)[:2000]}",
                    file=sys.stderr,
                )
        return 1
    return 0


def add_chaos_parser(cmds: Sub) -> None:
    c = command(
        cmds,
        "chaos",
        chaos,
        "run a real `ykt server` and N real `ykt pos` agents behind fault-injecting proxies, "
        "SIGKILL them at random while scripted sales run, heal, and check that money adds up "
        "(exit 1 with the seed, the invariant and the evidence when it does not)",
    )
    c.add_argument(
        "--seconds", type=_positive(float), default=20.0, help="seconds of faults (default 20)"
    )
    c.add_argument(
        "--terminals", type=_positive(int), default=2, help="POS agents to run (default 2)"
    )
    c.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of the schedule of faults and sales (the processes' timing is not "
        "replayed; default 1)",
    )
    c.add_argument(
        "--db",
        default="sqlite",
        metavar="sqlite|postgres|URL",
        help="the server's database: SQLite in its data directory (default), a throwaway "
        "PostgreSQL cluster started for the run (postgres; Debian's postgresql package), or a "
        "PostgreSQL URL (an empty database)",
    )
    c.add_argument(
        "--dir",
        type=Path,
        help="keep the processes' data and logs here (default: a temporary folder, removed "
        "when nothing was found)",
    )
