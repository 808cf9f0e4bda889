"""The ``ykt sim`` command group itself, apart from its commands (sim/cli.py adds them all;
``ykt sim fleet`` is built from this and sim/fleet/cli.py alone, edge/cli.py)."""

from __future__ import annotations

from sync.cmdline import Sub


def add_sim_group(sub: Sub) -> Sub:
    """The ``sim`` command of ``sub``; returns its commands (``ACTION``)."""
    p = sub.add_parser(
        "sim",
        help="simulated hardware and phone: tap cards, show codes, sell on a running agent",
        description="Drive the simulated devices of a running agent through its control API.",
    )
    return p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
