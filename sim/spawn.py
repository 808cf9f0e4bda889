"""Start a detached background process and return its pid (``python -m sim.spawn LOG -- ARGS``).

The simulator's long-lived helpers (the private pcscd, the card processes behind
``ykt sim card present``) outlive the command that starts them.  This launcher forks twice
and exits, so the caller waits for a child that is gone at once (no zombie, no "subprocess
still running" at exit), and the helper runs in its own session with its output in LOG.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim.errors import SimError


def spawn_detached(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "sim.spawn", str(log), "--", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    try:
        return int(out.stdout.strip())
    except ValueError:
        raise SimError(f"could not start {args[:3]}: {out.stderr.strip()[-500:]}") from None


def _main(argv: list[str]) -> int:
    log, sep, args = argv[0], argv[1], argv[2:]
    if sep != "--" or not args:
        print("usage: python -m sim.spawn LOG -- PROGRAM ARGS…", file=sys.stderr)
        return 2
    os.setsid()
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        return 0
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        os.execvp(args[0], args)
    finally:
        os._exit(127)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
