"""How sync.records was chosen: the two hot paths of the journal record with a dict (the code
before), a dataclass, a pydantic model and msgspec (what sync.records uses).

Run ``nice .venv/bin/python -m tests.unit.measure_record_types [N]``: for each way, N records
(default 50,000, the wire fixtures over and over) through

* **POS**: validate the fields and encode the canonical body (what sealing costs before the
  signature), and
* **ingest**: decode a body received on the wire, validate it and check that it is canonical
  (what the server does per record before the chain and the signature).

Every way must make the very bytes of the fixtures first.  The figures are in sync/records.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sync.records import JournalRecord
from tests.unit.make_wire_fixtures import FIXTURE
from tests.unit.test_records import _old_canonical, _old_check, _old_parse

_B62 = 2**62


@dataclass(frozen=True, slots=True)
class DataclassRecord:
    v: int
    term: str
    seq: int
    prev: str
    ts: int
    kind: str
    acct: int
    cred: str
    amt: int
    method: str
    off: bool
    pin: str
    spent: int
    lim: int
    bal: int | None
    op: str
    auth: str | None
    x: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "x"}  # type: ignore[attr-defined]
        if self.x is not None:
            d["x"] = self.x
        return d


class PydanticRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    v: Literal[1]
    term: str
    seq: Annotated[int, Field(ge=1, le=_B62)]
    prev: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    ts: Annotated[int, Field(ge=0, le=253_402_300_799_999)]
    kind: Literal["sale", "pin_fail"]
    acct: Annotated[int, Field(ge=0, le=_B62)]
    cred: str
    amt: Annotated[int, Field(ge=0, le=_B62)]
    method: Literal["card", "qr-forward", "qr-reverse"]
    off: bool
    pin: Literal["none", "ok", "fail"]
    spent: Annotated[int, Field(ge=-_B62, le=_B62)]
    lim: Annotated[int, Field(ge=-_B62, le=_B62)]
    bal: Annotated[int, Field(ge=-_B62, le=_B62)] | None
    op: str
    auth: str | None
    x: dict[str, Any] | None = None

    def body(self) -> bytes:
        return _old_canonical(self.model_dump(exclude={"x"} if self.x is None else None))


WAYS: dict[str, tuple[Callable[[dict[str, Any]], bytes], Callable[[str], Any]]] = {
    "dict + checks (before)": (
        lambda f: _old_canonical(_old_check(f)),
        lambda b: _old_canonical(_old_parse(b)) == b.encode(),
    ),
    "dataclass + the same checks": (
        lambda f: _old_canonical(DataclassRecord(**_old_check(f)).to_dict()),
        lambda b: _old_canonical(DataclassRecord(**_old_parse(b)).to_dict()) == b.encode(),
    ),
    "pydantic (strict model)": (
        lambda f: PydanticRecord.model_validate(f).body(),
        lambda b: PydanticRecord.model_validate_json(b).body() == b.encode(),
    ),
    "msgspec (sync.records)": (
        lambda f: JournalRecord.from_fields(f).body(),
        lambda b: JournalRecord.parse(b).body() == b.encode(),
    ),
}


def per_record_us(fn: Callable[[Any], Any], items: list[Any], n: int) -> float:
    for it in items:
        fn(it)  # warm up
    done, t0 = 0, time.perf_counter()
    while done < n:
        for it in items:
            fn(it)
        done += len(items)
    return (time.perf_counter() - t0) / done * 1e6


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    stored = json.loads(FIXTURE.read_text(encoding="utf-8"))
    bodies = [r["body"] for part in ("pos", "bench") for r in stored[part]["records"]]
    fields = [json.loads(b) for b in bodies]
    for name, (encode, check) in WAYS.items():
        assert [encode(f) for f in fields] == [b.encode() for b in bodies], name
        assert all(check(b) for b in bodies), name
    print(f"{'µs per record':32} {'POS validate+encode':>20} {'ingest parse+check':>20}")
    for name, (encode, check) in WAYS.items():
        pos, ingest = per_record_us(encode, fields, n), per_record_us(check, bodies, n)
        print(f"{name:32} {pos:20.2f} {ingest:20.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
