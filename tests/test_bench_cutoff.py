"""bench/cutoff.py must keep running: a tiny configuration end to end on the simulator, and its arithmetic.

The end-to-end run is the bench itself (a subprocess, the controller in its own process, SIGKILLed in the
`down` mode): 4 calls per mode, 2 at once. Its targets are asserted loosely here (a loaded CI machine is not
the benchmark); the figures that count are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cutoff_bench", ROOT / "bench" / "cutoff.py")
assert _spec is not None and _spec.loader is not None
cutoff = importlib.util.module_from_spec(_spec)
sys.modules["cutoff_bench"] = cutoff  # dataclasses look their module up there
_spec.loader.exec_module(cutoff)


def test_paid_time_is_whole_blocks_that_the_money_covers() -> None:
    assert cutoff.paid_seconds("4410", "0.05") == 5  # 0.60/min 1/1: a cent a second
    assert cutoff.paid_seconds("4420", "0.04") == 4  # 0.50/min: 0.04 is 4.8 s of price, 5 s costs 0.05 (rounded up)
    assert cutoff.paid_seconds("4420", "0.05") == 6  # 6 s cost exactly 0.05
    assert cutoff.paid_seconds("4430", "0.33") == 30  # 30/6: the next block (36 s) costs 0.36
    assert cutoff.paid_seconds("4440", "1.20") == 60  # 60/60 at 0.90: 120 s cost 1.80
    assert cutoff.paid_seconds("4430", "0.29") == 0  # not even the first block


def test_plans_put_long_calls_first_and_give_every_call_its_own_account_and_number() -> None:
    plans = cutoff.plan_calls("down", 12, 2)
    assert [p.number[:4] for p in plans[:2]] == ["4430", "4440"]
    assert {p.number[:4] for p in plans[2:]} == {"4410", "4420"}
    assert len({p.caller for p in plans}) == len({p.number for p in plans}) == 12
    assert not {p.caller for p in plans} & {p.caller for p in cutoff.plan_calls("up", 12, 2)}


def test_percentile_is_nearest_rank_and_summary_applies_the_targets() -> None:
    assert cutoff.percentile([1, 2, 3, 4], 0.5) == 2
    assert cutoff.percentile(list(range(60)), 0.99) == 59
    plans = cutoff.plan_calls("up", 3, 0)
    for plan, error in zip(plans, (5_000, -30_000, 1_000)):
        plan.b_answer_us, plan.b_end_us = 1_000_000, 1_000_000 + plan.paid_us + error
    row = cutoff.summarize("up", plans)
    assert row["min_us"] == -30_000 and row["max_us"] == 5_000
    assert row["checks"]["never early by more than one 20 ms tick"] is False
    assert row["holds"] is False


def test_tiny_run_on_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "cutoff.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cutoff.py"), "--calls", "4", "--long", "0", "--concurrency", "2",
         "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {row["mode"]: row for row in result["rows"]}
    assert set(rows) == {"up", "down"}, proc.stdout
    for row in rows.values():
        assert row["measured"] == 4 and row["problems"] == 0, (row, proc.stdout)
        assert row["leg_causes"] == ["ALLOTTED_TIMEOUT"], row
    assert result["nets_at_kill"] == [2, 2], proc.stdout  # every call had its net before the SIGKILL
    # loose bounds (a busy machine): our timer within 100 ms, the net never early and within 1.5 s
    assert -cutoff.TICK_US <= rows["up"]["min_us"] and rows["up"]["max_us"] <= 100_000, proc.stdout
    assert -cutoff.TICK_US <= rows["down"]["min_us"] and rows["down"]["max_us"] <= 1_500_000, proc.stdout
    assert all(call["cdr_checked"] for call in result["calls"]), result["calls"]
    assert "up " in proc.stdout and "down " in proc.stdout
