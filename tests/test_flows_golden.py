"""Golden tests of `check_flows`: each bad flow in tests/flows_golden/ and the exact report expected.

A case is either `NAME.yaml` (one file) or a folder `NAME/` (several files checked together); its
expected report is `NAME.expected`. Set SWITCHCTL_REGEN_GOLDEN=1 to rewrite the expected files,
then review the diff: the point of these files is that a person has read every message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from switchctl.flows import check_flows

GOLDEN = Path(__file__).parent / "flows_golden"
SITE_VALUES = {"company": "Acme", "support_ext": "2000", "timezone": "Europe/Paris"}
LISTS = {"vip": ["1234"], "blocked": ["666"]}
KNOWN_EXTENSIONS = {"1001", "2000"}
KNOWN_GATEWAYS = {"upstream", "backup"}


def _cases() -> list[str]:
    names = [p.stem for p in GOLDEN.glob("*.yaml")]
    names += [p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name != "sounds"]
    return sorted(names)


def _report(name: str) -> str:
    case = GOLDEN / name
    paths = sorted(case.glob("*.yaml")) if case.is_dir() else [GOLDEN / f"{name}.yaml"]
    result = check_flows(paths, sound_dirs=[GOLDEN / "sounds"], site_values=SITE_VALUES, lists=LISTS,
                         known_extensions=KNOWN_EXTENSIONS, known_gateways=KNOWN_GATEWAYS,
                         display_root=GOLDEN)
    return result.report()


@pytest.mark.parametrize("name", _cases())
def test_golden(name: str) -> None:
    expected_file = GOLDEN / f"{name}.expected"
    actual = _report(name)
    if os.environ.get("SWITCHCTL_REGEN_GOLDEN"):
        expected_file.write_text(actual, encoding="utf-8")
    assert expected_file.exists(), f"no {expected_file.name}; run with SWITCHCTL_REGEN_GOLDEN=1 and review it"
    assert actual == expected_file.read_text(encoding="utf-8")


def test_every_bad_case_reports_something() -> None:
    for name in _cases():
        assert (_report(name) == "") == (name == "good"), name
