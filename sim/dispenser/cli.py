"""``ykt sim dispenser …``: a simulated Creator CRT-591 card dispenser on a pseudo-terminal,
its encoder a vpcd slot of ``ykt sim reader``'s private pcscd.

::

    ykt sim reader start --slots 2 --dir R --json
    ykt sim dispenser start --dir R --name D --blanks 20 --encoder-slot 1 --json
        # {"device": "/dev/pts/5", …}: the kiosk takes --dispenser serial:///dev/pts/5
    ykt sim dispenser status --dir R --name D --json    # {"hopper", "rejected", "issued", …}
    ykt sim dispenser fault --dir R --name D --jam-at encoder   # the next feed jams
    ykt sim dispenser fault --dir R --name D --clear
    ykt sim dispenser take --dir R --name D --out CARD.img     # the holder takes the card
    ykt sim dispenser stop --dir R --name D
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from sim.dispenser import process
from sim.errors import SimError, SimUsageError
from sim.harness import pcscd
from sim.harness.procs import log_tail, pid_alive, poll
from sim.named import NAME_PATTERN
from sim.spawn import spawn_detached
from sync.cmdline import Sub, command, group


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)
    return 0


def _name(text: str) -> str:
    if not NAME_PATTERN.match(text):
        raise argparse.ArgumentTypeError("a name is 1-64 letters, digits, '.', '-' or '_'")
    return text


def running(where: Path, name: str) -> dict[str, Any] | None:
    """The state of dispenser ``name`` in ``where`` while its process runs, else None."""
    try:
        st = process.read_state(where, name)
    except SimUsageError:
        return None
    pid = int(st.get("pid", 0))
    return st if st.get("running") and pid > 0 and pid_alive(pid) else None


def start(args: argparse.Namespace) -> int:
    if running(args.dir, args.name):
        raise SimUsageError(f"the simulated dispenser {args.name!r} runs already (stop it first)")
    if not 0 <= args.blanks <= 10000:
        raise SimUsageError("--blanks is 0-10000")
    pcscd.VirtualReaders(args.dir).slot(args.encoder_slot)  # readers started, the slot exists
    state_path, _sock, _images = process.paths(args.dir, args.name)
    state_path.unlink(missing_ok=True)
    log = Path(os.path.abspath(args.dir)) / f"dispenser-{args.name}.log"
    argv = [
        sys.executable,
        "-m",
        "sim.dispenser.process",
        "--dir",
        str(args.dir),
        "--name",
        args.name,
        "--blanks",
        str(args.blanks),
        "--encoder-slot",
        str(args.encoder_slot),
        "--low-at",
        str(args.low_at),
        "--reject-capacity",
        str(args.reject_capacity),
    ]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    pid = spawn_detached(argv, log)

    def ready() -> dict[str, Any] | None:
        st = running(args.dir, args.name)
        if st is not None and st.get("pid") == pid:
            return st
        if not pid_alive(pid):
            raise SimError(f"the simulated dispenser exited at start:\n{log_tail(log, 2000)}")
        return None

    st: dict[str, Any] | None = poll(ready, 15.0)
    if st is None:
        raise SimError(f"the simulated dispenser did not start within 15 s (see {log})")
    out = {
        "device": st["device"],
        "url": f"serial://{st['device']}?baud=9600",
        "pid": pid,
        "encoder_reader": st["encoder_reader"],
        "hopper": len(st["blanks"]),
    }
    text = (
        f"simulated CRT-591 {args.name!r} (pid {pid}) on {st['device']}: "
        f"--dispenser serial://{st['device']}?baud=9600, encoder "
        f"pcsc://{st['encoder_reader']}, {len(st['blanks'])} blanks"
    )
    return _print(args, out, text)


def status(args: argparse.Namespace) -> int:
    st = running(args.dir, args.name)
    if st is not None:
        out = process.request(args.dir, args.name, "summary")
        out.pop("ok", None)
    else:  # stopped: what its state file says
        saved = process.read_state(args.dir, args.name)
        out = {
            "hopper": len(saved["blanks"]),
            "rejected": saved["rejected"],
            "issued": saved["issued"],
            "at_mouth": saved["mouth"],
            "at_encoder": saved["encoder"],
            "jammed": saved["jammed"] is not None,
            "jam_armed": saved["armed"],
            "taken": saved["taken"],
        }
    out["running"] = st is not None
    text = "\n".join(
        [
            f"dispenser {args.name!r} {'running' if st else 'NOT running'}: "
            f"{out['hopper']} blanks in the hopper",
            f"  at the encoder: {out['at_encoder'] or '-'}; at the mouth: {out['at_mouth'] or '-'}"
            + ("; JAMMED" if out["jammed"] else ""),
            f"  issued: {', '.join(out['issued']) or '-'}",
            f"  reject bin: {', '.join(out['rejected']) or '-'}",
        ]
    )
    return _print(args, out, text)


def fault(args: argparse.Namespace) -> int:
    out = process.request(args.dir, args.name, "fault", jam_at=None if args.clear else args.jam_at)
    out.pop("ok", None)
    text = "fault cleared" if args.clear else f"the next move to the {args.jam_at} jams"
    return _print(args, out, text)


def take(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise SimUsageError(f"{args.out} exists (--force overwrites it)")
    out = process.request(args.dir, args.name, "take")
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(out["image"])
    os.replace(tmp, args.out)
    data = {"uid": out["uid"], "image": str(args.out)}
    return _print(args, data, f"card {out['uid']} taken from the mouth: {args.out}")


def stop(args: argparse.Namespace) -> int:
    st = running(args.dir, args.name)
    if st is None:
        return _print(args, {"stopped": False}, f"the dispenser {args.name!r} was not running")
    pid = int(st["pid"])
    try:
        process.request(args.dir, args.name, "stop", timeout=5.0)
    except SimError:
        os.kill(pid, signal.SIGTERM)
    if not poll(lambda: not pid_alive(pid) or not running(args.dir, args.name), 10.0):
        os.kill(pid, signal.SIGKILL)
    return _print(args, {"stopped": True}, f"the dispenser {args.name!r} stopped")


def add_parsers(cmds: Sub) -> None:
    ds = group(
        cmds,
        "dispenser",
        "a simulated CRT-591 card dispenser on a pseudo-terminal (its encoder a vpcd slot)",
        "dispenser_command",
    )

    def cmd(name: str, run: Any, text: str) -> argparse.ArgumentParser:
        c = command(ds, name, run, text)
        c.add_argument("--dir", type=Path, required=True, help="the directory of ykt sim reader")
        c.add_argument("--name", type=_name, required=True, help="the dispenser's name")
        return c

    c = cmd(
        "start",
        start,
        "start a simulated dispenser in a process of its own; prints its pseudo-terminal "
        '({"device": "/dev/pts/N", …}) for --dispenser serial:///dev/pts/N',
    )
    c.add_argument("--blanks", type=int, default=20, help="blank cards in the hopper (20)")
    c.add_argument(
        "--encoder-slot",
        type=int,
        required=True,
        metavar="K",
        help="the vpcd slot (of ykt sim reader in --dir) a card at the encoder appears in",
    )
    c.add_argument("--seed", type=int, help="seed of the blanks' random UIDs (repeatable runs)")
    c.add_argument("--low-at", type=int, default=5, help="the hopper reads low at N blanks (5)")
    c.add_argument(
        "--reject-capacity", type=int, default=50, help="cards the reject bin holds (50)"
    )
    cmd(
        "status",
        status,
        "the dispenser's physical state: hopper count, the issued and rejected UIDs, the cards "
        "at the mouth and at the encoder (also once stopped)",
    )
    c = cmd("fault", fault, "make the next move to the encoder or to the mouth jam; --clear")
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--jam-at", choices=["encoder", "mouth"])
    how.add_argument(
        "--clear",
        action="store_true",
        help="clear an armed fault and a jam (the jammed card goes back to the encoder)",
    )
    c = cmd(
        "take",
        take,
        "the holder takes the card held at the mouth: its image, for ykt sim card present",
    )
    c.add_argument("--out", type=Path, required=True, help="the card image to write")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")
    cmd("stop", stop, "stop the dispenser's process (its state file stays, for status)")
