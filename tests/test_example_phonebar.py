"""The example phone bar sells calls: both example sites check clean, their rendered dialplans send
booth calls to the controller, and the booth flow (examples/phonebar/dialplans/booth.yaml) run with
the real prepaid service, the example's rates.csv and a real SQLite ledger bills a booth's call to
its own account, refuses what it must, and never bills an emergency call."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from switchctl.billing.accounts import Accounts
from switchctl.billing.ledger import Ledger
from switchctl.billing.money import Money, currency
from switchctl.billing.ratecsv import load_rates
from switchctl.config.site import load_site
from switchctl.features.prepaid import ASTERISK_NET, CutoffManager, PrepaidService
from switchctl.flows import FlowRunner
from switchctl.render.asterisk import render_asterisk
from switchctl.render.freeswitch import render_freeswitch
from switchctl.sitecheck import check_site
from switchctl.switch.call import DialOutcome, DialResult, DialTarget
from tests.fakecall import ScriptedCall
from tests.pg_fixture import store_on

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FS_SITE = EXAMPLES / "phonebar" / "site.yaml"
AST_SITE = EXAMPLES / "phonebar-asterisk" / "site.yaml"
EUR = currency("EUR")
US = 1_000_000


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


def wall() -> int:
    return time.time_ns() // 1000


@pytest.mark.parametrize("site_file", [FS_SITE, AST_SITE], ids=["freeswitch", "asterisk"])
def test_example_sites_check_clean_and_route_outside_numbers_to_the_booth_flow(site_file: Path) -> None:
    result = check_site(load_site(site_file), display_root=EXAMPLES)
    assert result.diagnostics == []
    for number in ("0612345678", "0044207946000", "00447700900123", "112", "15", "0899123456"):
        matched = result.flows.match(number)
        assert matched is not None and matched[0].name == "booth", number
    for number in ("1001", "0612", "+447700900123", "0044"):  # a booth, too short, + form, prefix only
        assert result.flows.match(number) is None, number


def test_both_examples_have_the_same_rate_table() -> None:
    assert (EXAMPLES / "phonebar" / "rates.csv").read_bytes() == (
        EXAMPLES / "phonebar-asterisk" / "rates.csv").read_bytes()


def test_rendered_dialplans_send_booth_calls_to_the_controller() -> None:
    fs = render_freeswitch(load_site(FS_SITE))
    dialplan = fs["dialplan/default/00_switchctl.xml"].decode()
    for expression in (r"^(?:^0\d{9}$)$", r"^(?:^00\d{7}$)$", r"^(?:^00\d{15}$)$", "^(?:^112$)$", "^(?:^15$)$"):
        block = dialplan.split(f'expression="{expression}"', 1)[1].split("</condition>", 1)[0]
        assert 'application="socket"' in block, expression
    ast = render_asterisk(load_site(AST_SITE))
    routes = ast["extensions.conf"].decode().split("[switchctl-routes]", 1)[1].split("\n[", 1)[0]
    for exten in ("112", "_0XXXXXXXXX", "_00XXXXXXX", "_00XXXXXXXXXXXXXXX"):
        assert f"exten => {exten},1,Stasis(switchctl,inbound,${{EXTEN}})" in routes, exten
    assert "switchctl-any-number" not in routes  # trunks and phones do not reach the app with any number


def test_committed_renders_are_up_to_date() -> None:
    root = EXAMPLES.parent
    for site_file, folder, render in ((FS_SITE, "freeswitch-conf/phonebar", render_freeswitch),
                                      (AST_SITE, "asterisk-conf/phonebar", render_asterisk)):
        for rel, text in render(load_site(site_file)).items():
            assert (root / folder / rel).read_bytes() == text, f"{folder}/{rel}: re-render"


class Bar:
    def __init__(self, store) -> None:
        site = load_site(FS_SITE)
        check = check_site(site, display_root=EXAMPLES)
        assert check.ok
        self.flows = check.flows
        self.ledger = Ledger(store, wall)
        self.accounts = Accounts(store, wall)
        self.book = load_rates(EXAMPLES / "phonebar" / "rates.csv")
        self.cutoff = CutoffManager(self.ledger, safety_net=ASTERISK_NET, warning_seconds=0)
        self.prepaid = PrepaidService(self.ledger, self.accounts, lambda: self.book, cutoff=self.cutoff)
        self.runner = FlowRunner(self.flows, site_values=dict(site.values), lists=dict(site.lists),
                                 sound_dirs=site.sound_dirs, numbering=site.numbering, billing=self.prepaid)

    async def booth(self, extension: str, credit: str | None) -> int:
        account = await self.accounts.create("booth", extension, EUR)
        if credit:
            await self.ledger.topup(account.id, eur(credit), f"float-{extension}")
        return account.id

    async def call(self, caller: str, number: str, dials=()) -> tuple[ScriptedCall, list[str]]:
        call = ScriptedCall(caller=caller, destination=number, uuid=f"{caller}-{number}", dials=dials)
        flow, captures = self.flows.match(number)
        trace = await self.runner.run(call, flow, captures)
        return call, [f"{node}:{outcome}" for _flow, node, outcome in trace.steps]


@pytest.fixture
async def bar(tmp_path):
    async with store_on("sqlite", tmp_path) as store:
        await store.create_all()
        b = Bar(store)
        yield b
        await b.cutoff.close()


def dial_targets(call: ScriptedCall) -> list[DialTarget]:
    (spec,) = [op[1] for op in call.ops if op[0] == "dial"]
    return [t for group in spec.groups for t in group]


async def test_a_booth_call_is_dialled_as_analysed_and_billed_to_the_booth(bar: Bar) -> None:
    acct = await bar.booth("1001", "1.00")
    answered = wall()
    target = DialTarget("gateway", "00447700900123", gateway="upstream")
    talk = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", target, "b-leg", answered, answered + 65 * US)
    call, path = await bar.call("1001", "00447700900123", dials=[talk])
    assert path[:4] == ["analyze:international", "booths_only:rule 1", "pay:next", "ring:next"]
    assert dial_targets(call) == [target]  # the number rated is the number dialled
    assert ("answer",) not in call.ops  # not answered before the far end: the booth hears ringback
    # UK mobile 00447: 0.05 connect + 0.25/min on 30/6; 65 s bills 66 s = 0.05 + 0.275 -> 0.33 (up)
    assert await bar.ledger.balance(acct) == eur("0.67")
    assert await bar.ledger.available(acct) == eur("0.67")  # nothing left on hold


@pytest.mark.parametrize(("caller", "number", "credit", "refusal", "prompt"), [
    ("1001", "0612345678", None, "pay:insufficient_funds", "no_credit.wav"),     # booth without money
    ("1001", "0812345678", "5.00", "pay:no_rate", "not_sold.wav"),               # 08: no rate sold
    ("1001", "0899123456", "5.00", "analyze:blocked", "not_allowed.wav"),        # premium: screened
    ("1000", "0612345678", "5.00", "booths_only:default", "not_allowed.wav"),    # the operator's phone
])
async def test_refusals_are_answered_and_explained(bar: Bar, caller, number, credit, refusal, prompt) -> None:
    acct = await bar.booth("1001", credit)
    call, path = await bar.call(caller, number)
    assert refusal in path
    plays = [op for op in call.ops if op[0] == "play"]
    assert len(plays) == 1 and Path(plays[0][1][0]).name == prompt
    assert call.ops.index(("answer",)) < call.ops.index(plays[0])
    assert not [op for op in call.ops if op[0] == "dial"]
    assert await bar.ledger.available(acct) == (eur(credit) if credit else eur("0"))


async def test_emergency_calls_are_carried_for_any_phone_and_never_billed(bar: Bar) -> None:
    acct = await bar.booth("1001", None)
    for caller in ("1000", "1001"):
        call, path = await bar.call(caller, "112", dials=["answered"])
        assert path[:2] == ["analyze:emergency", "sos:next"]
        assert dial_targets(call) == [DialTarget("gateway", "112", gateway="upstream")]
    assert await bar.ledger.entries(acct) == []


async def test_a_busy_callee_gives_the_reservation_back(bar: Bar) -> None:
    acct = await bar.booth("1001", "1.00")
    call, path = await bar.call("1001", "0145678901", dials=["busy"])
    assert "ring:busy" in path
    assert ("hangup", "USER_BUSY") in call.ops
    assert await bar.ledger.balance(acct) == await bar.ledger.available(acct) == eur("1.00")
