"""bench/ari_cps.py's own bookkeeping: reading sipp's statistics and deciding whether a step held.

The bench itself needs root, a private Asterisk and sipp (minutes); these fast checks cover the parts
that turn its raw numbers into the verdicts docs/BENCHMARKS.md quotes."""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ari_cps", ROOT / "bench" / "ari_cps.py")
assert _spec is not None and _spec.loader is not None
ari_cps = importlib.util.module_from_spec(_spec)
sys.modules["ari_cps"] = ari_cps  # dataclasses look their module up there
_spec.loader.exec_module(ari_cps)

HEADER = ("StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;CallRate(P);CallRate(C);"
          "IncomingCall(P);IncomingCall(C);OutgoingCall(P);OutgoingCall(C);TotalCallCreated;CurrentCall;"
          "SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C)")


def _line(outgoing: int, ok: int, failed: int) -> str:
    return f"t;t;t;00:00:01;00:00:09;50;49;48.9;0;0;3;{outgoing};{outgoing};0;2;{ok};0;{failed}"


def test_sipp_counts_reads_the_cumulative_columns_of_the_last_line(tmp_path: Path) -> None:
    stat = tmp_path / "s.csv"
    stat.write_text("\n".join([HEADER, _line(49, 0, 0), _line(400, 397, 3), ""]))
    assert ari_cps.sipp_counts(stat) == (400, 397, 3)


def test_sipp_counts_without_a_file_or_rows_is_zero(tmp_path: Path) -> None:
    assert ari_cps.sipp_counts(tmp_path / "missing.csv") == (0, 0, 0)
    (tmp_path / "h.csv").write_text(HEADER + "\n")
    assert ari_cps.sipp_counts(tmp_path / "h.csv") == (0, 0, 0)


def test_a_step_holds_only_with_no_failure_and_the_offered_rate_achieved() -> None:
    Row = ari_cps.Row
    assert Row("switchctl", 200, 1600, ok=1600, achieved_cps=199.7).sustained
    assert not Row("switchctl", 200, 1600, ok=1599, failed=1, achieved_cps=200.0).sustained
    assert not Row("switchctl", 350, 2000, ok=2000, achieved_cps=186.5).sustained  # calls came late
    assert not Row("baseline", 50, 0).sustained


def test_the_sipp_scenario_is_well_formed_and_waits_for_the_apps_bye() -> None:
    root = ET.parse(ROOT / "bench" / "sipp" / "uac_wait_bye.xml").getroot()
    steps = [(child.tag, child.get("request") or child.get("response")) for child in root]
    assert ("recv", "BYE") in steps and ("recv", "200") in steps
    assert steps.index(("recv", "200")) < steps.index(("recv", "BYE"))
