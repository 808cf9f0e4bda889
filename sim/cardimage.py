"""Card images as files a test engineer can create, inspect and edit.

Text format (the default; ``#`` starts a comment, hex may hold spaces)::

    # ykt simulated card: MIFARE Classic 1K
    uid: 04A1B2C3
    00: 04A1B2C3 D6 08 0400 796B742D73696D2D
    01: 00000000000000000000000000000000
    …
    63: FFFFFFFFFFFF FF078069 FFFFFFFFFFFF

A 1024-byte binary dump (the ``.mfd`` format of the libnfc tools; UID from block 0) is read
too.  Files are replaced atomically, so a reader of the file never sees half an image.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sim.errors import SimUsageError
from sim.mifare import BLOCKS, MifareClassic1K, blank_blocks

_LINE = re.compile(r"^(\d{1,2})\s*:\s*([0-9A-Fa-f ]+)$")
_UID = re.compile(r"^(?:[0-9A-F]{8}|[0-9A-F]{14})$")


def parse_uid(text: str) -> bytes:
    t = text.strip().upper().replace(":", "").replace(" ", "")
    if not _UID.match(t):
        raise SimUsageError(f"a MIFARE Classic UID is 4 or 7 bytes of hex, got {text!r}")
    return bytes.fromhex(t)


def new_card(uid: bytes) -> MifareClassic1K:
    return MifareClassic1K(uid, blank_blocks(uid))


def dumps(card: MifareClassic1K) -> str:
    lines = ["# ykt simulated card: MIFARE Classic 1K", f"uid: {card.uid.hex().upper()}"]
    for i, b in enumerate(card.blocks):
        h = bytes(b).hex().upper()
        if i % 4 == 3:
            h = f"{h[0:12]} {h[12:20]} {h[20:32]}"
        lines.append(f"{i:02d}: {h}")
    return "\n".join(lines) + "\n"


def loads(text: str, where: str = "image") -> MifareClassic1K:
    uid: bytes | None = None
    blocks: dict[int, bytearray] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith("uid:"):
            uid = parse_uid(line[4:])
            continue
        m = _LINE.match(line)
        if not m:
            raise SimUsageError(f"{where} line {n}: expected 'NN: 32 hex digits' or 'uid: HEX'")
        idx, hexdata = int(m.group(1)), m.group(2).replace(" ", "")
        if idx >= BLOCKS or len(hexdata) != 32:
            raise SimUsageError(f"{where} line {n}: block 0-63 with exactly 16 bytes")
        blocks[idx] = bytearray(bytes.fromhex(hexdata))
    if len(blocks) != BLOCKS:
        missing = sorted(set(range(BLOCKS)) - set(blocks))
        raise SimUsageError(
            f"{where}: blocks missing: {missing[:8]}{'…' if len(missing) > 8 else ''}"
        )
    if uid is None:
        uid = bytes(blocks[0][0:4])
    return MifareClassic1K(uid, [blocks[i] for i in range(BLOCKS)])


def load(path: Path) -> MifareClassic1K:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SimUsageError(f"cannot read card image {path}: {exc}") from exc
    if len(data) == BLOCKS * 16 and not data.startswith(b"#"):
        blocks = [bytearray(data[i * 16 : i * 16 + 16]) for i in range(BLOCKS)]
        return MifareClassic1K(bytes(blocks[0][0:4]), blocks)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SimUsageError(f"{path} is neither a text image nor a 1024-byte dump") from exc
    return loads(text, str(path))


def save(card: MifareClassic1K, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps(card))
    os.replace(tmp, path)
