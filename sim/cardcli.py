"""``ykt sim reader …`` and ``ykt sim card …``: virtual PC/SC readers and simulated cards.

::

    ykt sim reader start --slots 2 --dir R --json   # private pcscd + vpcd slots
    ykt sim card new --uid 04A1B2C3 --out C.img     # a blank MIFARE Classic 1K
    ykt sim card present C.img --dir R --slot 0     # returns once pcscd has it; it stays
    ykt sim card tear C.img --dir R --slot 0 --after 5
    ykt sim card remove --dir R --slot 0
    ykt sim card dump C.img --json
    ykt sim reader stop --dir R
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sim import cardimage
from sim.dump import dump
from sim.errors import SimError
from sim.harness import pcscd
from sync.cmdline import Sub, group
from sync.cmdline import command as cmd


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)
    return 0


# -- readers --------------------------------------------------------------------------------------
def reader_start(args: argparse.Namespace) -> int:
    st = pcscd.VirtualReaders(args.dir).start(args.slots, args.base_port)
    out = {"socket": st["socket"], "slots": st["slots"], "pid": st["pid"], "dir": st["dir"]}
    lines = [f"pcscd (pid {st['pid']}) for clients with PCSCLITE_CSOCK_NAME={st['socket']}"]
    lines += [
        f"  slot {s['slot']}: reader {s['name']!r}, vpcd port {s['port']}" for s in st["slots"]
    ]
    return _print(args, out, "\n".join(lines))


def reader_stop(args: argparse.Namespace) -> int:
    pcscd.VirtualReaders(args.dir).stop()
    return _print(args, {"stopped": True}, "virtual readers stopped")


def reader_restart(args: argparse.Namespace) -> int:
    vr = pcscd.VirtualReaders(args.dir)
    vr.restart(frozenset(args.without_slot or ()))
    st = vr.state()
    return _print(args, {"restarted": True, "pid": st["pid"]}, f"pcscd restarted (pid {st['pid']})")


def reader_status(args: argparse.Namespace) -> int:
    vr = pcscd.VirtualReaders(args.dir)
    st = vr.state()
    slots = []
    for s in st["slots"]:
        card = pcscd.card_state(vr, s["slot"]) or {}
        slots.append({**s, "card": card.get("image"), "card_status": card.get("status")})
    out = {"socket": st["socket"], "running": vr.running(), "slots": slots}
    text = "\n".join(
        [f"pcscd {'running' if out['running'] else 'NOT running'}: {st['socket']}"]
        + [f"  slot {s['slot']} {s['name']!r}: {s['card'] or 'empty'}" for s in slots]
    )
    return _print(args, out, text)


# -- cards ----------------------------------------------------------------------------------------
def card_new(args: argparse.Namespace) -> int:
    uid = cardimage.parse_uid(args.uid)
    if args.out.exists() and not args.force:
        raise SimError(f"{args.out} exists (--force overwrites it)")
    cardimage.save(cardimage.new_card(uid), args.out)
    return _print(
        args,
        {"image": str(args.out), "uid": uid.hex().upper()},
        f"blank MIFARE Classic 1K {uid.hex().upper()} written to {args.out}",
    )


def card_present(args: argparse.Namespace) -> int:
    st = pcscd.present_card(pcscd.VirtualReaders(args.dir), args.slot, args.image)
    return _print(args, st, f"card {st['uid']} is on slot {args.slot} ({st['reader']})")


def card_tear(args: argparse.Namespace) -> int:
    st = pcscd.present_card(
        pcscd.VirtualReaders(args.dir), args.slot, args.image, args.after, args.mode
    )
    return _print(
        args,
        {**st, "tear_after": args.after, "mode": args.mode},
        f"card {st['uid']} is on slot {args.slot}; it leaves after {args.after} APDUs",
    )


def card_remove(args: argparse.Namespace) -> int:
    vr = pcscd.VirtualReaders(args.dir)
    vr.slot(args.slot)  # the readers and the slot must exist
    was = pcscd.stop_card(vr, args.slot)
    return _print(
        args,
        {"removed": was, "slot": args.slot},
        "card removed" if was else f"slot {args.slot} was empty",
    )


def card_dump(args: argparse.Namespace) -> int:

    data = dump(cardimage.load(args.image), args.keystore)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(f"MIFARE Classic 1K  uid {data['uid']}")
    for sec in data["sectors"]:
        t = sec["trailer"]
        print(
            f"sector {sec['sector']:2d}  key A {t['key_a']}  access {t['access']}  "
            f"key B {t['key_b']}  ({t['conditions_text']})"
        )
        for b in sec["blocks"]:
            print(f"   {b['block']:2d}: {b['hex']}  {b.get('meaning', '')}")
    if data.get("campus_card"):
        print("campus card:", json.dumps(data["campus_card"], ensure_ascii=False))
    return 0


def add_parsers(cmds: Sub) -> None:
    rs = group(
        cmds, "reader", "virtual PC/SC readers: a private pcscd with vpcd slots", "reader_command"
    )
    c = cmd(rs, "start", reader_start, "start a private pcscd with vpcd virtual readers")
    c.add_argument("--slots", type=int, default=2, help="virtual reader slots (1-8, default 2)")
    c.add_argument("--dir", type=Path, required=True, help="state directory of these readers")
    c.add_argument("--base-port", type=int, help="first vpcd port to try (default 35963)")
    c = cmd(rs, "stop", reader_stop, "take every card away and stop the private pcscd")
    c.add_argument("--dir", type=Path, required=True)
    c = cmd(
        rs,
        "restart",
        reader_restart,
        "kill and restart the private pcscd (cards stay on their slots); --without-slot "
        "leaves a slot's reader out, as if unplugged",
    )
    c.add_argument("--dir", type=Path, required=True)
    c.add_argument("--without-slot", type=int, action="append", metavar="N")
    c = cmd(rs, "status", reader_status, "show the slots and the cards on them")
    c.add_argument("--dir", type=Path, required=True)

    ks = group(cmds, "card", "simulated MIFARE Classic 1K cards (image files)", "card_command")
    c = cmd(ks, "new", card_new, "make a blank card image (transport keys everywhere)")
    c.add_argument("--uid", required=True, help="4 or 7 bytes of hex, e.g. 04A1B2C3")
    c.add_argument("--out", type=Path, required=True, help="image file to write")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")
    c = cmd(ks, "present", card_present, "put a card on a virtual reader slot; it stays there")
    c.add_argument("image", type=Path)
    c.add_argument("--dir", type=Path, required=True)
    c.add_argument("--slot", type=int, default=0)
    c = cmd(ks, "tear", card_tear, "present a card that is pulled away after N APDUs")
    c.add_argument("image", type=Path)
    c.add_argument("--dir", type=Path, required=True)
    c.add_argument("--slot", type=int, default=0)
    c.add_argument("--after", type=int, required=True, help="APDUs answered before it leaves")
    c.add_argument(
        "--mode",
        choices=["partial", "before", "after"],
        default="partial",
        help="the APDU in flight when it leaves: a write lands half (partial, default), "
        "not at all (before), or fully without an answer (after)",
    )
    c = cmd(ks, "remove", card_remove, "take the card off a virtual reader slot")
    c.add_argument("--dir", type=Path, required=True)
    c.add_argument("--slot", type=int, default=0)
    c = cmd(ks, "dump", card_dump, "print a card image: blocks, decoded where the layout is known")
    c.add_argument("image", type=Path)
    c.add_argument("--keystore", type=Path, help="a keystore, to check the counter MACs")
