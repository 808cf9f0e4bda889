"""Text rendering of the benchmark figures (``ykt bench`` without ``--json``).

Budgets from docs/benchmarks.md are printed next to the figures for reading; nothing here passes or fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _lat(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "no samples"
    return f"p50 {s['p50_ms']:7.3f} ms  p99 {s['p99_ms']:7.3f} ms  max {s['max_ms']:8.3f} ms"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def header(out: dict[str, Any]) -> str:
    m = out["machine"]
    load = m["loadavg_at_start"]
    lines = [
        f"ykt bench{' --quick (small counts: a smoke test, not figures to quote)' if out['quick'] else ''}",
        f"machine: {m['cpus']} cores ({m['cpu_model']}), Python {m['python']}, SQLite "
        f"{m['sqlite']}, cryptography {m['cryptography']}",
        f"load average at start: {load[0]} {load[1]} {load[2]}"
        + ("  (the machine is busy: figures will be slower and noisier)" if load[0] > 0.7 else ""),
    ]
    return "\n".join(lines)


def sqlite(f: dict[str, Any]) -> list[str]:
    return [
        "SQLite floor (raw sqlite3, WAL, synchronous=FULL, journal-shaped rows)",
        f"  one-row commit          {_lat(f['commit'])}  (n={f['commit']['n']})",
        f"  batched insert, small rows    {f['batch_small_rows']['rows_per_s']:>12,.0f} rows/s",
        f"  batched insert, journal rows  {f['batch_journal_rows']['rows_per_s']:>12,.0f} rows/s",
    ]


def journal(f: dict[str, Any]) -> list[str]:
    e, q, fx = f["empty"], f["at_queue"], f["fixture"]
    made = (
        f"cached file {fx['cache_file']}"
        if fx.get("cached")
        else f"built in {fx.get('build_s')} s"
        + (f", cached as {fx['cache_file']}" if fx.get("cache_file") else "")
    )
    return [
        f"Journal durable append (Journal.append, real file, synchronous=FULL; {f['appends']} "
        "appends, each interleaved with one floor commit)",
        f"  floor commit            {_lat(f['floor'])}",
        f"  append, empty journal   {_lat(e['append'])}  = {_x(e['ratio_p50'])} / "
        f"{_x(e['ratio_p99'])} the floor (p50/p99)   budget ≤ 1.2×",
        f"  append, {q['queued']:,} queued  {_lat(q['append'])}  = {_x(q['ratio_p50'])} / "
        f"{_x(q['ratio_p99'])} the floor",
        f"  flat up to {q['queued']:,}: {_x(f['flat_p50'])} (p50) / {_x(f['flat_p99'])} (p99) "
        f"of the empty journal's figures; opening it took {q['open_s']} s",
        f"  large journal: {fx['how']}; {made}",
    ]


def ingest(f: dict[str, Any]) -> list[str]:
    i, h = f["in_process"], f["http"]
    v = h["verified"]
    return [
        "Server ingest (signed, chained 500-record batches)",
        f"  ykt server over loopback: {h['terminals']} terminals, {h['batches']} batches, "
        f"{h['records']:,} records, {h['accounts']} accounts",
        f"    {h['records_per_s']:>10,.0f} records/s   budget ≥ 20,000 on 2 cores",
        f"    batch ack {_lat(h['ack'])}   budget p99 ≤ 250 ms",
        f"    server CPU {h['server_cpu_us_per_record']} µs/record; afterwards: every head at its "
        f"last record, {v['alarms']} alarms, ledger conserved ({v['transfers']:,} transfers)",
        f"  sync.server.ingest.ingest alone (in process): {i['records_per_s']:,.0f} records/s, "
        f"batch {_lat(i['batch'])}",
    ]


def sale(f: dict[str, Any]) -> list[str]:
    lines = [
        f"Sale latency, tap → decision shown ({f['reader']}; ¥{f['amount_fen'] / 100:.2f} sales)",
    ]
    for mode in ("online", "offline"):
        m = f[mode]
        note = " (real server on loopback)" if mode == "online" else " (server stopped)"
        lines += [
            f"  {mode}{note}: {m['sales']} sales, {m['decided_offline']} decided offline",
            f"    total      {_lat(m['total'])}",
            f"    decision   {_lat(m['decision'])}"
            + (
                "  (authorize round trip)"
                if mode == "online"
                else "  (caches, journal, risk limits)"
            ),
            f"    card I/O   {_lat(m['card_io'])}  (simulated card, in process)",
            f"    append     {_lat(m['append'])}",
            f"    rest       {_lat(m['rest'])}",
            f"    agent CPU per tap (no I/O waits)          {_lat(m['cpu_agent'])}   budget p99 ≤ 3 ms",
            f"    card thread CPU, simulated card included  {_lat(m['cpu_thread'])}",
            f"    process CPU over the tap                  {_lat(m['cpu_process'])}",
        ]
    lines.append(
        "  (the 15 ms tap budget is through pcscd with a card write; this reader is in-process)"
    )
    return lines


def api(f: dict[str, Any]) -> list[str]:
    lines = ["API requests/s on SQLite (a mix of app, authorize and top-up requests)"]
    for r in f["runs"]:
        lat = "  ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in r["latency_ms"].items())
        lines += [
            f"  {r['server_processes']} server process(es), {r['client_processes']} client "
            f"processes: {r['requests_per_s']:,.0f} requests/s ({r['requests']:,} in "
            f"{r['seconds']} s, {r['errors']} errors)",
            f"    p50/p99 ms: {lat}",
        ]
    return lines


def qr(f: dict[str, Any]) -> list[str]:
    lines = ["QR frame → decision (decode + verify), one core, rendered phone screens"]
    for r in f["runs"]:
        lines.append(
            f"  {r['decoder']}: {r['presentations']} presentations × "
            f"{f['frames_per_presentation']} frames per condition; code {r['code_chars']} "
            f"chars, QR version {r['qr_version']}   budget p99 ≤ 10 ms, empty ≤ 4 ms"
        )
        for label, z in r["sizes"].items():
            worst = min(c["per_presentation"] for c in z["conditions"].values())
            lines.append(
                f"    {label}: p50 {z['frame_to_decision_p50_ms']:.2f} ms  p99 "
                f"{z['frame_to_decision_p99_ms']:.2f} ms; empty frame p99 "
                f"{z['empty_frame_p99_ms']:.2f} ms; presentations read, worst condition "
                f"{worst * 100:.1f} %"
            )
    return lines


def card(f: dict[str, Any]) -> list[str]:
    lines = ["Card tap through pcscd + vpcd (present → decision shown)"]
    if not f["modes"]:
        return [*lines, f"  {f.get('skipped') or 'skipped'}"]
    for m in f["modes"]:
        lines.append(f"  {m['mode']}: {m['approved']}/{m['taps']} approved")
        for name, key in (
            ("tap latency", "present_to_shown"),
            ("  card I/O", "card_io"),
            ("  journal", "journal"),
            ("  the rest", "rest"),
        ):
            v = m["latency_ms"][key]
            lines.append(f"    {name:<14} p50 {v['p50']:8.2f} ms  p99 {v['p99']:8.2f} ms")
        d = m["detection_delay_ms"]
        lines.append(f"    {'detection':<14} p50 {d['p50']:8.2f} ms  p99 {d['p99']:8.2f} ms")
    lines.append("  budget: tap latency p99 ≤ 15 ms; pcscd polls a vpcd slot every 400 ms")
    return lines


def db(f: dict[str, Any]) -> list[str]:
    lines = ["Ingest and API on SQLite and PostgreSQL, 1 and 2 server processes"]
    for g in f["figures"]:
        if "skipped" in g:
            lines.append(f"  PostgreSQL figures skipped: {g['skipped']}")
        elif g.get("bench") == "ingest":
            lines.append(
                f"  ingest on {g['db']}, {g['server_processes']} process(es), "
                f"{g['client_processes']} terminals: {g['records_per_s']:,.0f} records/s, batch "
                f"of {g['batch']} acked p50 {g['batch_ack_ms']['p50']} / p99 "
                f"{g['batch_ack_ms']['p99']} ms ({g['errors']} errors)"
            )
        else:
            lines.append(
                f"  API on {g['db']}, {g['server_processes']} process(es): "
                f"{g['requests_per_s']:,.0f} requests/s ({g['errors']} errors)"
            )
    return lines


def hotlist(f: dict[str, Any]) -> list[str]:
    lines = [
        f"Loss report → the card on every terminal's hotlist ({f['terminals']} simulated "
        f"terminals long-polling the feed, wait {f['wait_s']:.0f} s; {f['reports']} reports)",
        f"  delivered   {_lat(f['delivered'])}   budget p99 ≤ 3 s with 500 terminals",
        f"  missed {f['missed']} (not reached within 30 s), feed poll errors {f['poll_errors']}",
        f"  server CPU while the terminals wait (no change): {f['idle_server_cpu']:.3f} s per s",
    ]
    for i, r in enumerate(f["rounds"], 1):
        lines.append(
            f"    report {i}: {r['terminals_reached']} terminals, first/median/last at "
            f"{r['first_ms']}/{r['median_ms']}/{r['last_ms']} ms; "
            f"report acked in {r['report_ack_ms']} ms; server CPU {r['server_cpu_s']} s"
        )
    lines.append(f"  ({f['note']})")
    return lines


def printer(f: dict[str, Any]) -> list[str]:
    def lat(v: dict[str, Any]) -> str:
        return f"p50 {v['p50_ms']:8.2f} ms  p99 {v['p99_ms']:8.2f} ms  (n {v['n']})"

    if "skipped" in f:
        return [f"Receipts: {f['skipped']}"]
    return [
        f"Receipts on {f['printer']}",
        f"  approval, printer ready   {lat(f['with_printer'])}",
        f"  approval, paper out       {lat(f['paper_out'])}   (never delayed by the printer)",
        f"  receipt printed after it  {lat(f['receipt'])}   budget p99 ≤ 1000 ms",
        f"  paper back: {f['queued_with_paper_out']} queued receipts printed in "
        f"{f['drain_s']} s ({f['receipts_per_s']} receipts/s)",
    ]


def kiosk(f: dict[str, Any]) -> list[str]:
    lines = ["Kiosk reissue through pcscd + vpcd and the CRT-591 on a pty (confirm → at the mouth)"]
    if "skipped" in f:
        return [*lines, f"  {f['skipped']}"]
    lines.append(f"  {f['reissues']} reissues   {_lat(f['confirm_to_mouth'])}")
    names = {
        "feed_ms": "blank fed, seen by pcscd",
        "order_ms": "the server's order",
        "encode_ms": "encode + read back",
        "done_ms": "order closed",
        "mouth_ms": "to the mouth",
    }
    for key, name in names.items():
        lines.append(f"    {name:<26} {_lat(f['steps'][key])}")
    lines.append(f"  budget: confirm → card at the mouth p99 ≤ {f['budget_p99_ms'] / 1000:.0f} s")
    return lines


def peak(f: dict[str, Any]) -> list[str]:
    if "skipped" in f:
        return [f"Lunch peak: skipped ({f['skipped']})"]

    def pp(x: dict[str, Any]) -> str:
        return f"p50 {x['p50_ms']} / p99 {x['p99_ms']} ms (n={x['n']})"

    a, idle, slow = f["authorize"], f["authorize_idle"], f["authorize_slow"]
    ratio = f"{a['p99_ms'] / idle['p99_ms']:.1f}× idle" if a["p99_ms"] and idle["p99_ms"] else "n/a"
    h, lag = f["hotlist"], f["client_lag"]

    def late(x: dict[str, Any]) -> str:
        return f"{x['n']} times (max {x['max_ms']} ms, {x['total_s']} s in all)"

    return [
        f"Lunch peak on {f['db']}, {f['server_processes']} server process(es): "
        f"{f['terminals']} terminals long-polling, {f['pos']} POS at {f['sales_per_s']}/s "
        f"(target {f['sales_per_s_target']}), holders at {f['holders_per_s']}/s, "
        f"{h['reports']} loss reports, {f['peak_s']} s of peak"
        + (
            f"; streams and holders on a process of their own at nice {f['feed_nice']}"
            if f.get("routing") == "by path"
            else ""
        )
        + (
            f"; every WAL flush {f['pg_commit_delay_us'] / 1000:g} ms later (commit_delay: a "
            "slower disk)"
            if f.get("pg_commit_delay_us")
            else ""
        ),
        f"  authorize under the peak {pp(a)}; {ratio}   budget p99 ≤ 25 ms and ≤ 3× idle",
        f"  authorize on an idle server {pp(idle)}",
        f"  authorize over {slow['over_ms']:g} ms: {slow['n']} sales: {slow['after_report']} "
        f"within {slow['after_report_s']:g} s after a loss report, {slow['first_second']} "
        f"in the first second, {slow['other']} elsewhere; worst seconds (second: over/sales, "
        "max) "
        + (
            ", ".join(
                f"{w['second']}: {w['over']}/{w['sales']}, {w['max_ms']} ms"
                for w in slow["worst_seconds"][:4]
            )
            or "none"
        ),
        f"  journal push ack p99 {f['push_ack']['p99_ms']} ms; holder p99 "
        f"{f['holder']['p99_ms']} ms",
        f"  loss → every terminal {pp(h)}, missed {h['missed']}   budget p99 ≤ 2 s, none missed",
        f"  server CPU {f['server_cpu_per_s']} s per s; load clients' CPU "
        f"{f['client_cpu_per_s']} s per s ({f['client_processes']} processes)",
        "  load clients' own loops later than "
        f"{lag['sales']['over_ms']:g} ms: sellers {late(lag['sales'])}; stream holders "
        f"{late(lag['streams'])}",
        f"  errors {f['errors']} {f['errors_by_kind']}; skipped (POS or holder still busy) "
        f"{f['skipped_sales']} sales, {f['skipped_holders']} holder requests",
        f"  load average before {f['loadavg']['before']}, after {f['loadavg']['after']}",
    ]


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "sqlite": sqlite,
    "journal": journal,
    "ingest": ingest,
    "sale": sale,
    "api": api,
    "qr": qr,
    "card": card,
    "db": db,
    "hotlist": hotlist,
    "printer": printer,
    "kiosk": kiosk,
    "peak": peak,
    "peak_pg": peak,
}


def render(name: str, figures: dict[str, Any]) -> str:
    if name not in RENDERERS:  # a benchmark without its own layout: its figures as JSON
        return f"== {name}  [{figures.get('seconds')} s]\n" + json.dumps(
            figures, indent=2, ensure_ascii=False
        )
    lines = RENDERERS[name](figures)
    lines[0] = f"== {name}: {lines[0]}  [{figures['seconds']} s]"
    return "\n".join(lines)
