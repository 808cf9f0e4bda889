"""A private pcscd with vpcd virtual readers, for the tests, the card benchmark and test engineers
(``ykt sim reader``).

Nothing of the machine's own pcscd is touched:

- the readers come from ``DIR/reader.conf.d/`` (``pcscd -c``), one vpcd entry per two slots,
  each entry with its own copy of ``libifdvpcd.so`` (two entries loading the same file share
  the driver's state and get cross-wired);
- pcscd's socket path is fixed when pcscd is built, so the private instance is started by
  *socket activation*: we bind ``DIR/pcscd.comm``, hand it over as file descriptor 3 with
  ``LISTEN_FDS=1`` and ``LISTEN_PID``, and clients find it through ``PCSCLITE_CSOCK_NAME``
  (libpcsclite reads that variable once per process);
- ``/run/pcscd`` must exist (pcscd keeps its pid file there).

vpcd listens on 0.0.0.0: never leave a vpcd configuration on a production terminal (anyone
on the network could put a card in).  ``DIR/reader.json`` records the socket, the slots
(reader name and port) and pcscd's pid; the card processes of ``ykt sim card present`` record
themselves in ``DIR/slot-N.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim import cardimage
from sim.errors import SimError, SimUsageError
from sim.harness.procs import log_tail, pid_alive, poll, worker_slice
from sim.spawn import spawn_detached

VPCD_DRIVER_CANDIDATES = (
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
)
DEFAULT_BASE_PORT = 35963
FRIENDLY = "ykt sim"
STATE = "reader.json"


def vpcd_driver() -> Path:
    for c in VPCD_DRIVER_CANDIDATES:
        if Path(c).exists():
            return Path(c).resolve()
    raise SimError("vpcd is not installed (Debian: apt-get install vsmartcard-vpcd)")


#: how many times :meth:`VirtualReaders.start` starts pcscd before it gives up
START_TRIES = 3


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def pick_ports(entries: int, base: int = DEFAULT_BASE_PORT) -> int:
    """A base port such that base … base + 2·entries - 1 are free.  Under pytest-xdist each
    worker searches its own stretch (:func:`sim.harness.procs.worker_slice`), so two workers
    starting readers at the same moment do not pick the same ports."""
    index, count = worker_slice()
    width = 4000 // count
    first = base + index * width
    for start in range(first, first + width, 2):
        if all(_port_free(p) for p in range(start, start + 2 * entries)):
            return start
    raise SimError(f"no {2 * entries} free ports from {first}")


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` has ended; SIGKILL when it has not within ``timeout``."""
    if not poll(lambda: not pid_alive(pid), timeout, 0.01) and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _entry_name(k: int) -> str:
    """The FRIENDLYNAME of vpcd entry k; pcscd appends " <reader index> <slot>" (hex)."""
    return f"{FRIENDLY} {chr(ord('A') + k)}"


@dataclass
class VirtualReaders:
    """A private pcscd and its vpcd slots in directory ``dir``."""

    dir: Path

    def __post_init__(self) -> None:
        self.dir = Path(os.path.abspath(self.dir))  # pcscd runs from /

    @property
    def state_path(self) -> Path:
        return self.dir / STATE

    @property
    def socket_path(self) -> Path:
        return self.dir / "pcscd.comm"

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            raise SimUsageError(
                f"no virtual readers in {self.dir} (start them: ykt sim reader start --dir …)"
            ) from None
        except ValueError as exc:
            raise SimError(f"{self.state_path} is damaged: {exc}") from exc

    def slot(self, n: int) -> dict[str, Any]:
        slots = self.state()["slots"]
        if not 0 <= n < len(slots):
            raise SimUsageError(f"slot {n} does not exist (slots 0-{len(slots) - 1})")
        return dict(slots[n])

    def running(self) -> bool:
        try:
            return pid_alive(int(self.state()["pid"]))
        except SimUsageError:
            return False

    # -- configuration ----------------------------------------------------------------------
    def _write_config(self, entries: int, base: int, skip: frozenset[int]) -> None:
        conf = self.dir / "reader.conf.d"
        if conf.exists():
            shutil.rmtree(conf)
        conf.mkdir(parents=True)
        driver = vpcd_driver()
        for k in range(entries):
            if k in skip:
                continue
            lib = self.dir / f"libifdvpcd-{k}.so"
            if not lib.exists():
                shutil.copyfile(driver, lib)
            port = base + 2 * k
            (conf / f"vpcd-{k}").write_text(
                f'FRIENDLYNAME "{_entry_name(k)}"\n'
                f"DEVICENAME   /dev/null:0x{port:04X}\n"
                f"LIBPATH      {lib}\n"
                f"CHANNELID    0x{port:04X}\n"
            )

    def _launch(self) -> int:
        try:
            Path("/run/pcscd").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimError(f"pcscd needs /run/pcscd to exist (create it as root): {exc}") from exc
        if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
            raise SimError("pcscd is not installed (Debian: apt-get install pcscd)")
        return spawn_detached(
            [
                sys.executable,
                "-m",
                "sim.harness.pcscd",
                str(self.socket_path),
                str(self.dir / "reader.conf.d"),
            ],
            self.dir / "pcscd.log",
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def start(
        self, slots: int, base_port: int | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        if not 1 <= slots <= 8:
            raise SimUsageError("1 to 8 virtual slots")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.state_path.exists() and self.running():
            raise SimUsageError(f"virtual readers already run in {self.dir} (stop them first)")
        entries = (slots + 1) // 2
        # the ports are free when picked, but they lie in the range the kernel hands out to
        # outgoing connections: one can take a port before pcscd's driver binds it ("Address
        # already in use" in pcscd.log, the reader never listed; seen once under a full test
        # run).  Then pcscd is stopped and the readers started again on ports picked again.
        for attempt in range(START_TRIES):
            base = pick_ports(entries, base_port or DEFAULT_BASE_PORT)
            self._write_config(entries, base, frozenset())
            pid = self._launch()
            try:
                names = self._wait_readers(entries, frozenset(), pid, timeout)
                break
            except SimError:
                self._kill_pcscd(pid)
                if attempt == START_TRIES - 1:
                    raise
        state = {
            "socket": str(self.socket_path.resolve()),
            "pid": pid,
            "base_port": base,
            "entries": entries,
            "slots": [{"slot": i, "name": names[i], "port": base + i} for i in range(slots)],
            "dir": str(self.dir.resolve()),
        }
        self.state_path.write_text(json.dumps(state, indent=2))
        return state

    def _expected(self, entries: int, skip: frozenset[int]) -> list[str]:
        return [_entry_name(k) for k in range(entries) if k not in skip]

    def _wait_readers(
        self, entries: int, skip: frozenset[int], pid: int, timeout: float
    ) -> list[str]:
        """Wait until pcscd lists every configured reader; their names, slot by slot."""
        want = self._expected(entries, skip)

        def listed() -> list[str] | None:
            if not pid_alive(pid):
                raise SimError(f"pcscd exited at start:\n{log_tail(self.dir / 'pcscd.log', 2000)}")
            names = list_readers(self.socket_path)
            if names is None:
                return None
            found = {w: sorted(n for n in names if n.startswith(w + " ")) for w in want}
            if not all(len(v) >= 2 for v in found.values()):
                return None
            out: list[str] = []
            for k in range(entries):
                out.extend(found[_entry_name(k)][:2] if k not in skip else ["", ""])
            return out

        names: list[str] | None = poll(listed, timeout)
        if names is None:
            raise SimError(f"pcscd did not list the virtual readers within {timeout}s")
        return names

    def restart(self, without_slots: frozenset[int] = frozenset(), timeout: float = 10.0) -> None:
        """Kill pcscd and start it again (same socket, same ports).  Slots in
        ``without_slots`` are left out, as if their reader had been unplugged."""
        st = self.state()
        self._kill_pcscd(int(st["pid"]))
        skip = frozenset(s // 2 for s in without_slots)
        self._write_config(int(st["entries"]), int(st["base_port"]), skip)
        pid = self._launch()
        self._wait_readers(int(st["entries"]), skip, pid, timeout)
        st["pid"] = pid
        self.state_path.write_text(json.dumps(st, indent=2))

    def kill(self) -> None:
        """Kill pcscd (SIGKILL) and leave it dead: the service went away."""
        self._kill_pcscd(int(self.state()["pid"]), signal.SIGKILL)

    def _kill_pcscd(self, pid: int, sig: int = signal.SIGTERM) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        _wait_gone(pid, 10)

    def stop(self) -> None:
        st = self.state()
        for n in range(len(st["slots"])):
            cst = card_state(self, n)
            if cst is not None:
                _kill_card(self, n, cst, 5.0)
        self._kill_pcscd(int(st["pid"]))
        self.socket_path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)


#: the start of every PC/SC child (:func:`_pcsc_child`): ``s`` the module, ``c`` a context
_PCSC_CONTEXT = (
    "from smartcard import scard as s\n"
    "rv, c = s.SCardEstablishContext(s.SCARD_SCOPE_USER)\n"
    "if rv: raise SystemExit(3)\n"
)


def _pcsc_child(
    socket_path: Path, code: str, args: list[str], timeout: float
) -> subprocess.CompletedProcess[str] | None:
    """Run ``code`` (after :data:`_PCSC_CONTEXT`) in a short child process talking to the pcscd
    at ``socket_path``: libpcsclite reads ``PCSCLITE_CSOCK_NAME`` once per process, so the
    caller's own PC/SC context may belong to another pcscd.  None when it does not end within
    ``timeout``."""
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(socket_path)}
    try:
        return subprocess.run(
            [sys.executable, "-c", _PCSC_CONTEXT + code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None


def list_readers(socket_path: Path) -> list[str] | None:
    """Reader names of the pcscd at ``socket_path`` (None while it does not answer)."""
    code = "rv, r = s.SCardListReaders(c, [])\nprint('\\n'.join(r) if rv == 0 else '')\n"
    out = _pcsc_child(socket_path, code, [], 10)
    if out is None or out.returncode != 0:
        return None
    return [line for line in out.stdout.splitlines() if line]


def wait_slot(socket_path: Path, reader: str, present: bool, timeout: float = 5.0) -> bool:
    """Wait until pcscd reports ``reader`` with (``present``) or without a card; False when it
    does not within ``timeout`` (or pcscd does not answer)."""
    code = (
        "import sys, time\n"
        "want = s.SCARD_STATE_PRESENT if sys.argv[2] == '1' else s.SCARD_STATE_EMPTY\n"
        "deadline = time.monotonic() + float(sys.argv[3]); state = 0\n"
        "while time.monotonic() < deadline:\n"
        "    left = int((deadline - time.monotonic()) * 1000)\n"
        "    rv, st = s.SCardGetStatusChange(c, max(left, 1), [(sys.argv[1], state)])\n"
        "    if rv not in (0, s.SCARD_E_TIMEOUT): raise SystemExit(4)\n"
        "    if rv == 0:\n"
        "        state = st[0][1] & ~s.SCARD_STATE_CHANGED\n"
        "        if state & want: raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    args = [reader, "1" if present else "0", str(timeout)]
    out = _pcsc_child(socket_path, code, args, timeout + 10)
    return out is not None and out.returncode == 0


# -- simulated cards on slots --------------------------------------------------------------------
def _slot_state_path(readers: VirtualReaders, n: int) -> Path:
    return readers.dir / f"slot-{n}.json"


def card_state(readers: VirtualReaders, n: int) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_slot_state_path(readers, n).read_text()))
    except (FileNotFoundError, ValueError):
        return None


def stop_card(readers: VirtualReaders, n: int, timeout: float = 5.0) -> bool:
    """Take the card off slot ``n`` and wait until pcscd has noticed; True when there was one."""
    st = card_state(readers, n)
    if st is None:
        return False
    was = _kill_card(readers, n, st, timeout)
    if readers.running():
        slot = readers.slot(n)
        wait_slot(Path(readers.state()["socket"]), slot["name"], False, timeout)
    return was


def _kill_card(readers: VirtualReaders, n: int, st: dict[str, Any], timeout: float) -> bool:
    pid = int(st.get("pid", 0))
    was = pid > 0 and pid_alive(pid)
    if was:
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, timeout)
    _slot_state_path(readers, n).unlink(missing_ok=True)
    return was


def present_card(
    readers: VirtualReaders,
    n: int,
    image: Path,
    tear_after: int | None = None,
    tear_mode: str = "partial",
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Put the card of ``image`` on slot ``n`` (replacing any card there); returns once pcscd
    has picked it up."""

    slot = readers.slot(n)
    cardimage.load(image)  # a bad image fails here, with its line number
    stop_card(readers, n)
    # a card that just left (torn) must be gone for pcscd before the next one comes, or
    # pcscd sees no removal and no arrival
    wait_slot(Path(readers.state()["socket"]), slot["name"], False, timeout)
    state_path = _slot_state_path(readers, n)
    args = [
        sys.executable,
        "-m",
        "sim.vicc",
        "--port",
        str(slot["port"]),
        "--image",
        str(image.resolve()),
        "--state",
        str(state_path),
    ]
    if tear_after is not None:
        args += ["--tear-after", str(tear_after), "--tear-mode", tear_mode]
    pid = spawn_detached(args, readers.dir / f"slot-{n}.log")

    def picked_up() -> dict[str, Any] | None:
        st = card_state(readers, n)
        if st and st.get("pid") == pid and st.get("status") in ("in", "torn"):
            return st
        if not pid_alive(pid):
            raise SimError(f"the card process ended; see slot-{n}.log")
        return None

    st: dict[str, Any] | None = poll(picked_up, timeout, 0.01)
    if st is None:
        raise SimError(f"pcscd did not pick up the card on slot {n} within {timeout}s")
    return {**st, "slot": n, "reader": slot["name"]}


def _exec_pcscd(sock_path: str, conf: str) -> None:
    """Child side of :meth:`VirtualReaders._launch`: bind the socket as fd 3, exec pcscd."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    Path(sock_path).unlink(missing_ok=True)
    s.bind(sock_path)
    s.listen(64)
    os.chmod(sock_path, 0o666)
    if s.fileno() != 3:
        os.dup2(s.fileno(), 3)
        s.close()
    os.set_inheritable(3, True)
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    os.execve(pcscd, [pcscd, "--foreground", "--config", conf, "--info"], env)


if __name__ == "__main__":
    _exec_pcscd(sys.argv[1], sys.argv[2])
