"""bench/transfer.py must keep running: a tiny run end to end on the simulator (and, `slow`, on a private
Asterisk), its arithmetic, and its reading of Asterisk's ARI events.

The end-to-end runs are the bench itself (a subprocess; the controller in its own process): 3 transfers per
mode and side, 2 at once. No latency is asserted (a loaded CI machine is not the benchmark; the figures that
count are in docs/BENCHMARKS.md): only that every transfer was measured, against the right target, on the
switch's events, and that no channel (nor, on Asterisk, bridge) was left behind.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("transfer_bench", ROOT / "bench" / "transfer.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["transfer_bench"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def trial(mode: str, who: str, latency_ms: float | None, elapsed_ms: float | None = None) -> object:
    t = bench.Trial("sim", mode, who, 0)
    if latency_ms is None:
        t.problem = "TimeoutError: no bridge"
    else:
        t.requested_us, t.bridged_us = 1_000_000, 1_000_000 + int(latency_ms * 1000)
    t.elapsed_ms = elapsed_ms
    return t


def test_percentile_is_nearest_rank() -> None:
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert bench.percentile([float(v) for v in range(60)], 0.99) == 59.0  # fewer than 100: the max
    assert bench.percentile([float(v) for v in range(1, 201)], 0.99) == 198.0


def test_summary_counts_problems_apart_and_ratios_compare_ours_with_the_peer() -> None:
    trials = [trial("blind", "ours", 10.0, 6.0), trial("blind", "ours", 20.0, 7.0), trial("blind", "ours", None, 1.0),
              trial("blind", "peer", 4.0), trial("blind", "peer", 5.0)]
    rows = {(r["mode"], r["who"]): r for r in bench.summarize(trials)}
    ours, peer = rows["blind", "ours"], rows["blind", "peer"]
    assert (ours["calls"], ours["measured"]) == (3, 2)
    assert ours["problems"] == ["TimeoutError: no bridge"]
    assert (ours["p50_ms"], ours["p99_ms"], ours["max_ms"], ours["min_ms"]) == (10.0, 20.0, 20.0, 10.0)
    assert (ours["elapsed_p50_ms"], ours["elapsed_max_ms"]) == (6.0, 7.0)  # the failed trial's figure is not used
    assert "elapsed_p50_ms" not in peer
    [ratio] = bench.ratios(list(rows.values()))
    assert (ratio["mode"], ratio["p50"], ratio["p99"]) == ("blind", 10.0 / 4.0, 20.0 / 5.0)


def test_plan_alternates_ours_and_the_peer() -> None:
    plan = bench.plan_trials("sim", ["blind", "attended"], 2)
    assert [(t.mode, t.who) for t in plan] == [("blind", "ours"), ("blind", "peer")] * 2 + \
        [("attended", "ours"), ("attended", "peer")] * 2
    assert len({t.index for t in plan}) == len(plan)  # every trial its own caller number


def test_tiny_run_on_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "transfer.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "transfer.py"), "--switches", "sim", "--calls", "3", "--concurrency", "2",
         "--workdir", str(tmp_path / "work"), "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {(row["mode"], row["who"]): row for row in result["rows"]}
    assert set(rows) == {("blind", "ours"), ("blind", "peer"), ("attended", "ours"), ("attended", "peer")}
    for row in rows.values():
        assert row["measured"] == 3 and not row["problems"], (row, proc.stdout)
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["max_ms"] < 5000, row
    for mode in ("blind", "attended"):  # the controller's own figure: the bridge ordered, never after bridged
        ours = [t for t in result["trials"] if t["who"] == "ours" and t["mode"] == mode]
        assert all(t["elapsed_ms"] is not None and 0 < t["elapsed_ms"] * 1000 < t["latency_us"] for t in ours), ours
    assert {r["mode"] for r in result["ratios"]} == {"blind", "attended"}
    assert result["left_behind"] == [], result["left_behind"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ours/peer p50" in proc.stdout


# -- the real-Asterisk half: its reading of ARI events ---------------------------------------------------------


def test_ari_timestamps_are_read_to_the_microsecond_they_give() -> None:
    assert bench.ari_timestamp_us("2026-11-26T01:02:03.456+0000") == 1795654923_456_000
    assert bench.ari_timestamp_us("2026-11-26T02:02:03.456+0100") == 1795654923_456_000
    assert bench.ari_timestamp_us(None) == 0 and bench.ari_timestamp_us("yesterday") == 0
    assert bench.floor_ms(1_234_567) == 1_234_000


def _ev(kind: str, ms: int, channel: str = "", name: str = "", bridge: str = "", **extra: object) -> dict:
    event: dict = {"type": kind, "timestamp": f"2026-11-26T01:02:03.{ms:03d}+0000", **extra}
    if channel:
        event["channel"] = {"id": channel, "name": name or f"PJSIP/x-{channel}", "caller": {"number": extra.get("n", "")}}
    if bridge:
        event["bridge"] = {"id": bridge}
    return event


def test_ari_events_pair_channels_at_the_later_entry_into_one_bridge() -> None:
    events = bench.AriEvents()
    base = 1795654923_000_000
    for e in (
        _ev("ChannelCreated", 1, "c1", "PJSIP/sipp-0001", n="50001"),
        _ev("ChannelCreated", 2, "p1", "PJSIP/party-0002", n="50001"),  # a dialled leg: not a caller
        _ev("ChannelEnteredBridge", 10, "c1", "PJSIP/sipp-0001", "b1"),
        _ev("ChannelEnteredBridge", 12, "p1", "PJSIP/party-0002", "b1"),
        _ev("ChannelLeftBridge", 20, "c1", "PJSIP/sipp-0001", "b1"),  # the caller on hold
        _ev("ChannelEnteredBridge", 30, "t1", "PJSIP/tgt-0003", "b1"),  # consultation: party with target
        _ev("ChannelEnteredBridge", 45, "c1", "PJSIP/sipp-0001", "b1"),  # complete: the caller joins them
        _ev("BridgeDestroyed", 50, bridge="b1"),
        _ev("ChannelEnteredBridge", 60, "t1", "PJSIP/tgt-0003", "b2"),  # a new bridge starts empty
        _ev("ChannelDestroyed", 70, "c1", "PJSIP/sipp-0001", cause_txt="Normal Clearing"),
        _ev("StasisStart", 71, "p9", "PJSIP/party-0009", application="benchpeer"),
        _ev("StasisStart", 72, "s9", "PJSIP/sipp-0009", application="switchctl"),  # the controller's: not ours
    ):
        events.on_event(e)
    journal = events.journal.records
    assert journal["caller:50001"] == [{"id": "c1", "us": base + 1000}]
    assert [(r["with"], r["name"], r["us"] - base) for r in journal["together:c1"]] == [
        ("p1", "PJSIP/party-0002", 12_000), ("p1", "PJSIP/party-0002", 45_000), ("t1", "PJSIP/tgt-0003", 45_000)]
    assert [(r["with"], r["us"] - base) for r in journal["together:t1"]] == [("p1", 30_000), ("c1", 45_000)]
    assert events.members == {"b2": {"t1"}}
    assert journal["gone:c1"][0]["cause"] == "Normal Clearing"
    assert "stasis:p9" in journal and "stasis:s9" not in journal


async def test_the_rig_stops_the_clock_at_the_first_pairing_with_the_target_after_the_request() -> None:
    rig = bench.AsteriskRig(bench.ControllerEvents(), None, "")
    base = 1795654923_000_000
    for e in (_ev("ChannelEnteredBridge", 5, "c1", "PJSIP/sipp-1", "b1"),
              _ev("ChannelEnteredBridge", 6, "x1", "PJSIP/tgt-9", "b1"),  # before the request: not it
              _ev("ChannelLeftBridge", 7, "x1", "PJSIP/tgt-9", "b1"),
              _ev("ChannelEnteredBridge", 9, "p1", "PJSIP/party-2", "b1"),
              _ev("ChannelEnteredBridge", 9, "t1", "PJSIP/tgt-3", "b1")):
        rig.events.on_event(e)
    t = bench.Trial("asterisk", "blind", "ours", 0, caller_uuid="c1", leg_uuid="c1")
    t.requested_us = base + 9_400  # the pairing is stamped 9 ms: Asterisk truncated, it came after the request
    await rig.bridged(t)
    assert t.target_uuid == "t1" and t.bridged_us == base + 9_500 and t.latency_us == 100


def test_switches_default_to_both_when_asterisk_can_run_and_asking_for_it_when_not_fails() -> None:
    assert bench.choose_switches(None, None) == ["sim", "asterisk"]
    assert bench.choose_switches(None, "needs root") == ["sim"]
    assert bench.choose_switches("asterisk", None) == ["asterisk"]
    assert bench.choose_switches("sim", "needs root") == ["sim"]
    for bad in ("asterisk", "sim,asterisk"):
        with pytest.raises(ValueError, match="needs root"):
            bench.choose_switches(bad, "needs root")
    for bad in ("", "fs", "sim,sim"):
        with pytest.raises(ValueError, match="sim, asterisk"):
            bench.choose_switches(bad, None)


def test_free_udp_port_spans_leave_the_media_ports_free() -> None:
    port = bench.free_udp_port(span=4)
    assert port % 2 == 0
    import socket

    for p in range(port, port + 4):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", p))


@pytest.mark.slow
def test_tiny_run_on_a_private_asterisk(tmp_path: Path) -> None:
    problem = bench.asterisk_unavailable()
    if problem is not None:
        pytest.skip(f"the real-Asterisk half {problem}")
    out = tmp_path / "transfer.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "transfer.py"), "--switches", "asterisk", "--calls", "2",
         "--concurrency", "2", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {(row["mode"], row["who"]): row for row in result["rows"]}
    assert set(rows) == {("blind", "ours"), ("blind", "peer"), ("attended", "ours"), ("attended", "peer")}
    assert {row["switch"] for row in rows.values()} == {"asterisk"}
    for row in rows.values():
        assert row["measured"] == 2 and not row["problems"], (row, proc.stdout)
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["max_ms"] < 5000, row
    for t in result["trials"]:  # every transfer ended with the target: a channel of the target gateway
        assert t["target_uuid"] and t["target_uuid"] != t["caller_uuid"], t
    ours = [t for t in result["trials"] if t["who"] == "ours"]
    assert all(t["elapsed_ms"] is not None and t["elapsed_ms"] > 0 for t in ours), ours
    assert result["left_behind"] == [], result["left_behind"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
