"""``ykt pos`` takes the counter peripherals from the command line or the config file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge.pos.cli import add_parser, load_config
from sync.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers())
    return p.parse_args(["pos", *argv])


def test_devices_from_the_config_file_and_the_command_line_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "pos.toml"
    cfg.write_text(
        'data = "D"\nprinter = "escpos+net://10.0.0.5:9100"\n'
        'display = "serial:///dev/ttyUSB0"\npinpad = "serial:///dev/ttyUSB1?baud=19200"\n'
    )
    got = load_config(_args("--config", str(cfg)))
    assert (got.printer, got.display, got.pinpad) == (
        "escpos+net://10.0.0.5:9100",
        "serial:///dev/ttyUSB0",
        "serial:///dev/ttyUSB1?baud=19200",
    )
    got = load_config(_args("--config", str(cfg), "--printer", "escpos+usb://04b8:0202"))
    assert got.printer == "escpos+usb://04b8:0202" and got.display == "serial:///dev/ttyUSB0"
    assert load_config(_args("--data", "D")).printer is None


def test_a_device_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "pos.toml"
    cfg.write_text('data = "D"\nprinter = 9100\n')
    with pytest.raises(ConfigError, match="printer must be a string"):
        load_config(_args("--config", str(cfg)))


def test_a_device_url_without_a_driver_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"no printer driver for lp://"):
        load_config(_args("--data", "D", "--printer", "lp:///dev/usb/lp0"))
    with pytest.raises(ConfigError, match="pinpad"):
        load_config(_args("--data", "D", "--pinpad", "/dev/ttyUSB1"))
