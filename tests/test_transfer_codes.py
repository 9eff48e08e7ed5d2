"""Feature-code reader and transfer routes (pure)."""

from __future__ import annotations

import pytest

from switchctl.features.transfer.codes import CodeAction, FeatureCodeReader
from switchctl.features.transfer.errors import TransferError
from switchctl.features.transfer.options import DEFAULT_CODES, TransferRoute
from switchctl.features.transfer.routes import resolve_route
from switchctl.switch.call import DialTarget


def feed(reader: FeatureCodeReader, keys: str, start: float = 0.0, gap: float = 0.1) -> list[CodeAction]:
    out: list[CodeAction] = []
    for i, key in enumerate(keys):
        out += reader.feed(key, start + i * gap)
    return out


def reader(timeout: float = 3.0) -> FeatureCodeReader:
    return FeatureCodeReader(DEFAULT_CODES, timeout)


def test_blind_code_number_and_hash():
    assert feed(reader(), "*1201#") == [CodeAction("blind", "201")]


def test_attended_code_number_then_pause():
    r = reader()
    assert feed(r, "*2305") == []
    assert r.deadline == pytest.approx(0.4 + 3.0)  # the last key came at 0.4
    assert r.poll(3.3) is None  # not yet
    assert r.poll(3.4) == CodeAction("attended", "305")
    assert r.deadline is None


def test_a_pause_then_a_key_completes_the_number_first():
    r = reader()
    feed(r, "*1201")
    # 201 was complete at the pause (a missed timer cannot lose it); "5" starts nothing
    assert r.feed("5", 10.0) == [CodeAction("blind", "201")]
    assert r.poll(20.0) is None


def test_pause_completes_and_new_key_can_start_a_code():
    r = FeatureCodeReader({"blind": "9", "attended": "8"}, 1.0)
    feed(r, "920")
    assert r.feed("8", 5.0) == [CodeAction("blind", "20")]
    assert feed(r, "44#", start=5.1) == [CodeAction("attended", "44")]


def test_other_keys_are_ignored_and_a_broken_code_restarts():
    assert feed(reader(), "5*3**1401#") == [CodeAction("blind", "401")]


def test_partial_code_is_forgotten_after_the_timeout():
    r = reader(timeout=1.0)
    assert r.feed("*", 0.0) == []
    assert r.poll(1.0) is None  # a partial code yields nothing
    assert r.feed("1", 1.5) == []  # "1" alone is no code
    assert feed(r, "#", start=1.6) == []


def test_code_without_number_gives_nothing():
    assert feed(reader(), "*1#") == []
    r = reader()
    feed(r, "*1")
    assert r.poll(100.0) is None


def test_during_a_consultation_the_consult_codes_apply():
    r = reader()
    r.consulting = True
    assert feed(r, "*1") == [CodeAction("cancel")]
    assert feed(r, "*2") == [CodeAction("complete")]
    assert feed(r, "7*3") == [CodeAction("three_way")]
    r.consulting = False
    assert feed(r, "*3") == []  # no three-way outside a consultation


def test_mode_change_resets_a_pending_entry():
    r = reader()
    feed(r, "*12")
    r.consulting = True
    assert r.deadline is None
    assert r.poll(100.0) is None


def test_digits_after_the_number_limit_are_dropped():
    r = reader()
    (action,) = feed(r, "*1" + "1" * 40 + "#")
    assert action.number == "1" * 32


def test_only_star_and_hash_after_a_transfer_code_do_not_add_to_the_number():
    assert feed(reader(), "*12*0#") == [CodeAction("blind", "20")]


def test_bad_codes_are_refused():
    with pytest.raises(ValueError, match="prefix"):
        FeatureCodeReader({"blind": "*1", "attended": "*12"}, 3.0)
    with pytest.raises(ValueError, match="unknown"):
        FeatureCodeReader({"park": "*9"}, 3.0)
    with pytest.raises(ValueError, match="pressed"):
        FeatureCodeReader({"blind": "*x"}, 3.0)
    with pytest.raises(ValueError, match="positive"):
        FeatureCodeReader(DEFAULT_CODES, 0)


def test_disabled_code_is_never_recognised():
    r = FeatureCodeReader({"blind": "*1", "attended": ""}, 3.0)
    assert feed(r, "*2301#*1302#") == [CodeAction("blind", "302")]


ROUTES = (
    TransferRoute(pattern=r"0(\d{6,})", kind="gateway", gateway="trunk1", strip=1, prefix="+49"),
    TransferRoute(pattern=r"8\d", kind="flow", flow="survey"),
    TransferRoute(pattern=r"\d{2,6}", kind="phone"),
)


def test_routes_first_fullmatch_wins():
    assert resolve_route(ROUTES, "0301234567").target == DialTarget("gateway", "+49301234567", gateway="trunk1")
    flow = resolve_route(ROUTES, "81")
    assert (flow.flow, flow.target, flow.to) == ("survey", None, "81")
    assert resolve_route(ROUTES, "201").target == DialTarget("phone", "201")
    assert resolve_route(ROUTES, "0123").target == DialTarget("phone", "0123")  # too short for the trunk


def test_no_route_is_a_transfer_error():
    with pytest.raises(TransferError, match="no transfer route for '1'"):
        resolve_route(ROUTES, "1")
    with pytest.raises(TransferError, match="no transfer route for ''"):
        resolve_route(ROUTES, "")


def test_route_that_strips_everything_is_refused():
    with pytest.raises(TransferError, match="nothing to dial"):
        resolve_route((TransferRoute(pattern=r"\d", strip=1),), "5")
