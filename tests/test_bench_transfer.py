"""bench/transfer.py must keep running: a tiny run end to end on the simulator, and its arithmetic.

The end-to-end run is the bench itself (a subprocess; the controller in its own process): 3 transfers per
mode and side, 2 at once. No latency is asserted (a loaded CI machine is not the benchmark; the figures that
count are in docs/BENCHMARKS.md): only that every transfer was measured, against the right target, on the
switch's events, and that no channel was left behind.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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
        [sys.executable, str(ROOT / "bench" / "transfer.py"), "--calls", "3", "--concurrency", "2",
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
