"""``ykt bench`` on a production install: a fresh virtualenv with ``pip install -e .`` and the
runtime extras only (``.[camera,serial,pcsc,pg,printer]``, no ``[dev]``: no pytest, hypothesis, httpx,
schemathesis, playwright, mypy, ruff or import-linter).  pip's cache makes the install take
about half a minute; ``ykt bench --quick`` (every benchmark) runs in it as well, by hand
(docs/benchmarks.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers import DEV_ONLY, ROOT

#: what a clone holds that ``pip install .`` builds from
SOURCE = ("pyproject.toml", "README.md", "drivers", "sync", "edge", "sim", "kiosk_ui")


def _run(*cmd: str, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runs_without_the_dev_extras(tmp_path: Path) -> None:
    # a copy of the source: an editable install writes ykt.egg-info next to pyproject.toml, and
    # the processes the other tests start (cwd: this checkout) read their entry points there
    src = tmp_path / "src"
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    _run(
        python, "-m", "pip", "install", "-q", "-e", f"{src}[camera,serial,pcsc,pg,printer]",
        timeout=500, cwd=tmp_path,
    )  # fmt: skip
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = _run(python, "-c", probe, *DEV_ONLY, timeout=60, cwd=tmp_path).stdout.strip()
    assert found == "[]", f"dev-only packages in the production venv: {found}"
    assert sys.prefix != str(env_dir)

    ykt = str(env_dir / "bin" / "ykt")
    out = _run(
        ykt, "bench", "--quick", "--json", "--only", "sqlite", "--only", "hotlist",
        "--dir", str(tmp_path / "work"), "--no-cache",
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    figures = json.loads(out.stdout)["benchmarks"]
    assert list(figures) == ["sqlite", "hotlist"]
    assert figures["sqlite"]["commit"]["n"] == 200
    h = figures["hotlist"]
    assert (h["terminals"], h["reports"], h["missed"], h["poll_errors"]) == (100, 2, 0, 0)
