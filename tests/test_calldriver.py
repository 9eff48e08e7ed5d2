"""EslCallDriver against the simulator with switchctl's real controller and the example phone-bar site.

Only inbound ESL reaches the switch here (bgapi originate loopback/..., uuid_send_dtmf, uuid_kill), so the same
driver runs against a real FreeSWITCH; the controller sees the loopback call on its outbound socket.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchctl.calldriver import DRIVER_EVENTS, CallDriverTimeout, EslCallDriver
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.esl.inbound import InboundClient
from switchctl.esl.outbound import OutboundServer
from switchctl.flowtest import sim_routes
from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
from switchctl.sitecheck import check_site

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "phonebar" / "site.yaml"
SPEED = 20.0  # media seconds per real second: the menu's 5 s timeout lasts 0.25 s
PRESS_DELAY = 0.1 / SPEED  # a caller pressing 0.1 s (media) into the prompt


def driver_for(sim: FreeSwitchSim, **kwargs) -> EslCallDriver:
    client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=DRIVER_EVENTS, event_format="plain",
                           name="calldriver-test")
    return EslCallDriver(client, **kwargs)


@pytest.fixture
async def phonebar():
    site = load_site(EXAMPLE)
    checked = check_site(site)
    assert checked.ok, checked.report()
    controller = Controller(site, checked.flows)
    server = OutboundServer(lambda session: controller.handle_session(session, "sim"), host="127.0.0.1", port=0)
    await server.start()
    sim = FreeSwitchSim(SimConfig(
        dialplan=sim_routes(site, checked.flows, f"127.0.0.1:{server.port}"),
        users={p.extension: UserBehaviour(registered=True, answer_after=0.2, hangup_after=0.5) for p in site.phones},
        media_speed=SPEED, sessions_per_second=10_000, max_sessions=10_000))
    await sim.start()
    driver = driver_for(sim, press_delay=PRESS_DELAY)
    await driver.start()
    try:
        yield driver, sim
    finally:
        await driver.close()
        await sim.close()
        await server.close()


def prompts(outcome) -> list[str]:
    """The sound file of each play_and_get_digits / playback the call ran, in order."""
    out = []
    for app, arg, _response in outcome.apps:
        if app == "play_and_get_digits":
            out.append(arg.split(" ")[5].rsplit("/", 1)[-1])
        elif app == "playback":
            out.append(arg.rsplit("/", 1)[-1])
    return out


async def test_menu_path_over_inbound_esl_only(phonebar):
    driver, sim = phonebar
    outcome = await driver.call("9000", ["1", "9"], caller="1001", timeout=20)
    assert outcome.ok and outcome.originate == f"+OK {outcome.caller_uuid}"
    # main menu -1-> rates menu -9-> main menu, then silence: short greeting twice, goodbye
    assert prompts(outcome) == ["welcome.wav", "rates_menu.wav", "welcome.wav", "main_short.wav", "main_short.wav",
                                "goodbye.wav"]
    assert outcome.apps[0][0] == "answer" and outcome.apps[-1][0] == "socket"
    assert outcome.presses_used == 5 and outcome.dtmf == "19" and not outcome.press_errors
    assert outcome.hangup_cause == "NORMAL_CLEARING" and outcome.caller_hangup_cause == "NORMAL_CLEARING"
    assert outcome.answered and outcome.billusec is not None and outcome.billusec > 0
    assert outcome.billsec is not None and outcome.billsec >= 0
    assert outcome.uuid is not None and outcome.uuid != outcome.caller_uuid
    assert outcome.variables["other_loopback_leg_uuid"] == outcome.caller_uuid
    assert outcome.variables["loopback_leg"] == "B"
    assert outcome.events[0] == "CHANNEL_CREATE" and outcome.events[-1] == "CHANNEL_HANGUP_COMPLETE"
    assert "CHANNEL_ANSWER" in outcome.events and outcome.events.count("DTMF") == 2
    assert outcome.caller_events[-1] == "CHANNEL_HANGUP_COMPLETE"
    await asyncio.sleep(0.05)
    assert not sim.channels  # both legs destroyed


async def test_caller_hangs_up_during_a_menu(phonebar):
    driver, _sim = phonebar
    outcome = await driver.call("9000", ["1", "hangup"], timeout=20)
    # the second collect (the rates menu) is where the caller leaves; nothing is played after it
    assert prompts(outcome) == ["welcome.wav", "rates_menu.wav"]
    assert outcome.hangup_cause == "NORMAL_CLEARING" and outcome.caller_hangup_cause == "NORMAL_CLEARING"
    assert outcome.apps[-1][0] == "socket" and outcome.presses_used == 2
    assert outcome.caller_events.index("CHANNEL_HANGUP_COMPLETE") >= 0


async def test_ten_concurrent_calls_keep_their_own_legs(phonebar):
    driver, sim = phonebar
    scripts = [["1", "9"] if i % 2 == 0 else ["hangup"] for i in range(10)]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(driver.call("9000", presses, caller=f"10{i:02d}", timeout=30)
                         for i, presses in enumerate(scripts))), 40)
    assert len({o.uuid for o in outcomes}) == 10 and len({o.caller_uuid for o in outcomes}) == 10
    for outcome, presses in zip(outcomes, scripts):
        assert outcome.variables["other_loopback_leg_uuid"] == outcome.caller_uuid
        assert outcome.hangup_cause == "NORMAL_CLEARING"
        if presses == ["hangup"]:
            assert prompts(outcome) == ["welcome.wav"]
        else:
            assert prompts(outcome)[:3] == ["welcome.wav", "rates_menu.wav", "welcome.wav"]
            assert prompts(outcome)[-1] == "goodbye.wav" and outcome.dtmf == "19"
    await asyncio.sleep(0.05)
    assert not sim.channels


async def test_unrouted_number_fails_the_originate():
    sim = FreeSwitchSim(SimConfig(dialplan=[], media_speed=SPEED))
    await sim.start()
    driver = driver_for(sim)
    await driver.start()
    try:
        outcome = await driver.call("4242", timeout=5)
    finally:
        await driver.close()
        await sim.close()
    assert outcome.originate == "-ERR NO_ROUTE_DESTINATION" and not outcome.ok
    assert outcome.hangup_cause == "NO_ROUTE_DESTINATION" and not outcome.answered
    assert outcome.caller_hangup_cause == "NO_ROUTE_DESTINATION"


async def test_timeout_kills_the_caller_leg():
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^7000$", "park")], media_speed=SPEED))
    await sim.start()
    driver = driver_for(sim)
    await driver.start()
    try:
        with pytest.raises(CallDriverTimeout) as raised:
            await driver.call("7000", timeout=0.3)
        assert raised.value.outcome.uuid is not None
        assert raised.value.outcome.events[:1] == ["CHANNEL_CREATE"]
        for _ in range(50):
            if not sim.channels:
                break
            await asyncio.sleep(0.02)
        assert not sim.channels  # uuid_kill of the caller leg took the parked leg with it
    finally:
        await driver.close()
        await sim.close()


async def test_driver_refuses_a_client_without_the_events_it_needs():
    client = InboundClient("127.0.0.1", 1, "ClueCon", events=("BACKGROUND_JOB",), event_format="plain")
    with pytest.raises(ValueError, match="CHANNEL_CREATE"):
        await EslCallDriver(client).start()


async def test_bad_presses_and_variables_are_refused_before_dialling():
    sim = FreeSwitchSim(SimConfig(media_speed=SPEED))
    await sim.start()
    driver = driver_for(sim)
    await driver.start()
    try:
        with pytest.raises(ValueError, match="press 'x'"):
            await driver.call("9000", ["x"])
        with pytest.raises(ValueError, match="no spaces, commas"):
            await driver.call("9000", variables={"a": "1,2"})
        assert not sim.channels
    finally:
        await driver.close()
        await sim.close()
