"""``sim://NAME[?dir=D]`` as a receipt printer, in the agent's own process: the real ESC/POS
driver (:class:`drivers.printer.escpos.EscposPrinter`, python-escpos's bytes) over a transport
that hands the bytes to the simulated printer (:class:`sim.escpos_stream.PrinterModel`), which
appends what it prints, unchanged, to ``D/NAME.escpos`` (default: the current directory) and
answers the ``DLE EOT`` status requests.  ``ykt sim printer show --dir D --name NAME`` reads
it.  For a printer in a process of its own, behind a pseudo-terminal or a TCP port, use
``ykt sim printer start`` (:mod:`sim.periph`)."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from drivers.errors import DeviceUrlError
from drivers.printer.escpos import EscposPrinter
from sim.escpos_stream import PrinterModel
from sim.named import Named

PRINTERS: Named[LocalPrinter] = Named("printer")


class LocalPrinter:
    """A transport into a simulated printer in this process (``model``: its paper, its
    cover, its power, for tests)."""

    two_way = True

    def __init__(self, name: str, out: Path) -> None:
        self.name = name
        self.out = out
        self.model = PrinterModel()
        self._answers = bytearray()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            printed, answers = self.model.receive(data)
            if printed:
                with open(self.out, "ab") as f:
                    f.write(printed)
            self._answers += answers

    def read(self, n: int, timeout: float) -> bytes:
        with self._lock:
            out = bytes(self._answers[:n])
            del self._answers[:n]
            return out

    def discard_input(self) -> None:
        with self._lock:
            self._answers.clear()

    def close(self) -> None:
        PRINTERS.drop(self.name, self)


def open_url(url: str) -> EscposPrinter:
    name = PRINTERS.name_in(url)
    q = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    unknown = set(q) - {"dir"}
    if unknown:
        raise DeviceUrlError(f"{url}: unknown option(s) {', '.join(sorted(unknown))}")
    folder = Path(q.get("dir", "."))
    if not folder.is_dir():
        raise DeviceUrlError(f"{url}: {folder} is not a directory")
    transport = PRINTERS.put(name, LocalPrinter(name, folder / f"{name}.escpos"))
    return EscposPrinter(url, transport)
