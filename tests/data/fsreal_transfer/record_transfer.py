"""How tests/data/fsreal_transfer was recorded: drive the transfer primitives of switchctl on a real FreeSWITCH. Usage: drive.py CASE [CASE...]

Inbound ESL and the outbound socket both go through a recording TCP proxy (raw bytes per connection:
<tag><n>.s2c.raw = what the side that connected sent, .c2s.raw = what it received; for the inbound
connection the switch's stream is in*.c2s.raw, for the outbound socket out*.s2c.raw)."""
import asyncio, json, os, sys, time, traceback, uuid as uuidlib

sys.path.insert(0, "/work/main")
from switchctl.esl.inbound import InboundClient
from switchctl.esl.outbound import OutboundServer
from switchctl.switch.call import DialSpec, DialTarget, CallGone, OriginateSpec, DialFailed
from switchctl.switch.freeswitch import CALL_EVENTS, FreeSwitchCall, FreeSwitchSwitch, call_info_from_channel_data

ESL_PORT, OUT_PORT, OUT_REAL, IN_PROXY = 8033, 8096, 8098, 8099
G = lambda gw, t=None: DialTarget("gateway", "5551234", gateway=gw, timeout=t)
OBS = ("BACKGROUND_JOB", "CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PARK",
       "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "PLAYBACK_START", "PLAYBACK_STOP",
       "DTMF", "CUSTOM conference::maintenance")
T0 = time.time()
CASE = {"name": "none"}
EVENTS = []
PCMU = {"absolute_codec_string": "PCMU"}


def log(*a):
    print(f"{time.time() - T0:7.3f}", *a, flush=True)


async def proxy(listen_port, to_port, tag):
    n = [0]

    async def on_client(r, w):
        n[0] += 1
        k = n[0]
        ur, uw = await asyncio.open_connection("127.0.0.1", to_port)
        os.makedirs(CASE["name"], exist_ok=True)
        fin = open(f"{CASE['name']}/{tag}{k}.s2c.raw", "ab")
        fout = open(f"{CASE['name']}/{tag}{k}.c2s.raw", "ab")

        async def pump(a, b, f):
            try:
                while data := await a.read(65536):
                    f.write(data); f.flush(); b.write(data); await b.drain()
            except Exception:
                pass
            finally:
                with_ = b.close()
        await asyncio.gather(pump(r, uw, fin), pump(ur, w, fout))
    return await asyncio.start_server(on_client, "127.0.0.1", listen_port)


def ev(e):
    EVENTS.append((time.time() - T0, e))
    n = e.name
    if n in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE") and e.get("Application") in ("set", "export", "event"):
        return
    extra = ""
    if n.startswith("CHANNEL_EXECUTE"):
        extra = f"{e.get('Application')} {(e.get('Application-Data') or '')[:60]} -> {e.get('Application-Response')} AS={e.get('Answer-State')}"
    if n == "CHANNEL_HANGUP_COMPLETE":
        extra = e.get("Hangup-Cause")
    if n == "DTMF":
        extra = e.get("DTMF-Digit")
    if n == "CUSTOM":
        extra = f"{e.get('Action')} {e.get('Conference-Name')} member={e.get('Member-ID')}"
    if n == "BACKGROUND_JOB":
        extra = (e.body or b"")[:80] if hasattr(e, "body") else ""
    log("EV", n, (e.get("Channel-Name") or "")[:28], (e.unique_id or "")[:8], e.get("Channel-State"), extra)


async def chan_state(client, uuid):
    d = await client.api(f"uuid_dump {uuid} json", check=False)
    if not d.startswith("{"):
        return d.strip()[:60]
    j = json.loads(d)
    return {k: j.get(k) for k in ("Channel-State", "Answer-State", "Channel-Call-State", "variable_current_application",
                                 "variable_park_after_bridge", "variable_hangup_after_bridge")}


async def run():
    inproxy = await proxy(IN_PROXY, ESL_PORT, "in")
    outproxy = await proxy(OUT_PORT, OUT_REAL, "out")
    client = InboundClient("127.0.0.1", IN_PROXY, "ClueCon", events=OBS, event_format="plain")
    await client.connect()
    client.add_event_handler(ev)
    sw = FreeSwitchSwitch("fs1", client)
    calls: asyncio.Queue = asyncio.Queue()

    async def handler(session):
        data = await session.connect()
        info = call_info_from_channel_data(data, "fs1")
        await session.subscribe(CALL_EVENTS)
        await session.linger()
        call = FreeSwitchCall(session, info)
        await call.answer()
        done = asyncio.get_running_loop().create_future()
        await calls.put((call, done))
        await done

    server = OutboundServer(handler, port=OUT_REAL)
    await server.start()

    async def caller():
        a = str(uuidlib.uuid4())
        await client.bgapi(f"originate {{origination_uuid={a},origination_caller_id_name={CASE['name']},"
                           f"origination_caller_id_number=1001}}loopback/9000/default &park")
        call, done = await asyncio.wait_for(calls.get(), 10)
        return call, done

    results = {}
    for name in sys.argv[1:]:
        CASE["name"] = name
        os.makedirs(name, exist_ok=True)
        log("=====", name)
        res = results[name] = {}
        try:
            await CASES[name](client, sw, caller, res)
        except Exception as exc:
            traceback.print_exc()
            res["error"] = repr(exc)
        await asyncio.sleep(2)
        res["channels_after"] = (await client.api("show channels count")).strip()
        if "0 total" not in res["channels_after"]:
            log("LEFTOVER", await client.api("show channels"))
            await client.api("hupall NORMAL_CLEARING")
            await asyncio.sleep(1)
        log("RESULT", name, json.dumps(res, default=str))
        with open(f"{name}/events.txt", "w") as f:
            for t, e in EVENTS:
                f.write(f"=== {t:.3f} {e.name}\n")
                for k, v in e.headers.items():
                    f.write(f"{k}: {v}\n")
        EVENTS.clear()
    json.dump(results, open(f"results_{int(time.time())}.json", "w"), indent=1, default=str)
    await server.close()
    await client.close()


# -- cases --------------------------------------------------------------------------------------
async def orig_answered(client, sw, caller, res):
    leg = await sw.originate(OriginateSpec(G("gwwait"), timeout=5))
    res["leg"] = leg.uuid
    res["answered_at_us"] = leg.answered_at_us
    res["state"] = await chan_state(client, leg.uuid)
    await asyncio.sleep(1)
    await leg.hangup()
    res["cause"] = leg.hangup_cause


async def orig_busy(client, sw, caller, res):
    try:
        await sw.originate(OriginateSpec(G("gwbusy"), timeout=5))
        res["raised"] = None
    except DialFailed as exc:
        res["raised"] = (exc.outcome.value, exc.cause)


async def orig_noanswer(client, sw, caller, res):
    t = time.time()
    try:
        await sw.originate(OriginateSpec(G("gwring"), timeout=3))
        res["raised"] = None
    except DialFailed as exc:
        res["raised"] = (exc.outcome.value, exc.cause)
    res["elapsed"] = round(time.time() - t, 2)


async def orig_cancel(client, sw, caller, res):
    task = asyncio.ensure_future(sw.originate(OriginateSpec(G("gwring"), timeout=20)))
    await asyncio.sleep(1.5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        res["cancelled"] = True
    await asyncio.sleep(1)
    res["count_1s_after"] = (await client.api("show channels count")).strip()


async def take_park(client, sw, caller, res):
    """2: dial gwwait, take_leg on answer, park it 1 s later: what does dial return?"""
    call, done = await caller()
    legs = []

    async def on_answer(ans):
        leg = await sw.take_leg(ans.peer_uuid)
        legs.append(leg)
        res["taken_answered_at_us"] = (leg.answered_at_us, ans.answered_at_us)

        async def later():
            await asyncio.sleep(1.0)
            log("park ->")
            await leg.park()
            log("park done")
        asyncio.ensure_future(later())

    result = await call.dial(DialSpec([[G("gwwait")]], on_answer=on_answer, variables=PCMU))
    res["dial"] = (result.outcome.value, result.cause, result.caller_hung_up, result.peer_uuid)
    leg = legs[0]
    await asyncio.sleep(0.5)
    res["peer_state"] = await chan_state(client, leg.uuid)
    res["a_state"] = await chan_state(client, call.uuid)
    await call.play(["silence_stream://300"])
    res["after_play"] = "ok"
    await leg.hangup()
    res["peer_cause"] = leg.hangup_cause
    await call.hangup()
    done.set_result(None)


async def music_move(client, sw, caller, res):
    """3 + 4: park with music, bridge the leg with another one, hang that one up -> parked?"""
    leg1 = await sw.originate(OriginateSpec(G("gwwait"), timeout=5))
    leg2 = await sw.originate(OriginateSpec(G("gwwait2"), timeout=5))
    await leg1.park("tone_stream://%(300,300,350);loops=-1")
    await asyncio.sleep(1.5)
    res["leg1_music"] = await chan_state(client, leg1.uuid)
    await leg1.bridge(leg2)
    await asyncio.sleep(1.5)
    res["leg1_bridged"] = await chan_state(client, leg1.uuid)
    res["leg2_bridged"] = await chan_state(client, leg2.uuid)
    await leg2.hangup()
    await asyncio.sleep(1)
    res["leg1_after_other_hangup"] = await chan_state(client, leg1.uuid)
    res["leg1_cause"] = leg1.hangup_cause
    # music park then a conference
    await leg1.park("tone_stream://%(300,300,350);loops=-1")
    await asyncio.sleep(1)
    await leg1.join_conference("h10room")
    await asyncio.sleep(1.5)
    res["leg1_conf"] = await chan_state(client, leg1.uuid)
    res["room"] = (await client.api("conference h10room json_list", check=False))[:400]
    await leg1.hangup()


async def call_bridge(client, sw, caller, res):
    """5: Call.bridge; the leg hangs up -> caller's bridge returns, caller up, next op works; then bridge
    to a second leg and move it away (park) -> TRANSFERRED."""
    call, done = await caller()
    leg = await sw.originate(OriginateSpec(G("gwwait"), timeout=5))
    task = asyncio.ensure_future(call.bridge(leg))
    await asyncio.sleep(2)
    res["room"] = (await client.api(f"conference bridge-{call.uuid} json_list", check=False))[:800]
    await leg.hangup()
    r = await asyncio.wait_for(task, 10)
    res["bridge1"] = (r.outcome.value, r.cause, r.caller_hung_up)
    await call.play(["silence_stream://300"])
    res["after_play1"] = "ok"
    leg2 = await sw.originate(OriginateSpec(G("gwwait2"), timeout=5))
    task = asyncio.ensure_future(call.bridge(leg2))
    await asyncio.sleep(2)
    await leg2.park()
    r = await asyncio.wait_for(task, 10)
    res["bridge2"] = (r.outcome.value, r.cause, r.caller_hung_up)
    await asyncio.sleep(0.5)
    res["leg2_state"] = await chan_state(client, leg2.uuid)
    await call.play(["silence_stream://300"])
    res["after_play2"] = "ok"
    # the caller hangs up while bridged: leg parked
    task = asyncio.ensure_future(call.bridge(leg2))
    await asyncio.sleep(2)
    await client.api(f"uuid_kill {call.uuid}")
    r = await asyncio.wait_for(task, 10)
    res["bridge3"] = (r.outcome.value, r.cause, r.caller_hung_up)
    await asyncio.sleep(0.5)
    res["leg2_after_caller_gone"] = await chan_state(client, leg2.uuid)
    await leg2.hangup()
    done.set_result(None)


async def three_way(client, sw, caller, res):
    """6: Call.conference + 2 x join_conference, conference_remove."""
    call, done = await caller()
    leg1 = await sw.originate(OriginateSpec(G("gwwait"), timeout=5))
    leg2 = await sw.originate(OriginateSpec(G("gwwait2"), timeout=5))
    task = asyncio.ensure_future(call.conference("h10three"))
    await leg1.join_conference("h10three")
    await leg2.join_conference("h10three")
    await asyncio.sleep(1.5)
    res["room"] = await client.api("conference h10three json_list", check=False)
    await sw.conference_remove("h10three", leg1.uuid)
    await asyncio.sleep(0.5)
    res["leg1_after_remove"] = await chan_state(client, leg1.uuid)
    await sw.conference_remove("h10three", call.uuid)
    r = await asyncio.wait_for(task, 10)
    res["caller_conference"] = r
    await call.play(["silence_stream://300"])
    res["after_play"] = "ok"
    await leg1.hangup()
    await leg2.hangup()
    await call.hangup()
    done.set_result(None)


async def hold(client, sw, caller, res):
    """7: hold with a tone loop, then the next op stops it."""
    call, done = await caller()
    t = time.time()
    await call.hold("tone_stream://%(300,300,440)")
    res["hold_started_s"] = round(time.time() - t, 3)
    await asyncio.sleep(2.5)
    t = time.time()
    await call.play(["silence_stream://300"])
    res["play_after_hold_s"] = round(time.time() - t, 3)
    await call.hold()  # default music
    await asyncio.sleep(1.5)
    t = time.time()
    await call.play(["silence_stream://300"])
    res["play_after_default_hold_s"] = round(time.time() - t, 3)
    await call.hangup()
    done.set_result(None)


async def dtmf(client, sw, caller, res):
    """8: RFC 2833 from gwdtmf reaching Leg.on_dtmf: an originated leg, then a dial's peer."""
    got = []
    leg = await sw.originate(OriginateSpec(G("gwdtmf"), timeout=5))
    leg.on_dtmf(lambda d: (got.append(d), log("on_dtmf", d)))
    await asyncio.sleep(3)
    res["originated_leg_digits"] = "".join(got)
    await leg.hangup()
    call, done = await caller()
    got2 = []

    async def on_answer(ans):
        lb = await sw.take_leg(ans.peer_uuid)
        lb.on_dtmf(lambda d: (got2.append(d), log("peer on_dtmf", d)))
        asyncio.get_running_loop().call_later(3.5, lambda: asyncio.ensure_future(lb.hangup()))
    r = await call.dial(DialSpec([[G("gwdtmf")]], on_answer=on_answer, variables=PCMU))
    res["peer_digits"] = "".join(got2)
    res["dial"] = (r.outcome.value, r.cause)
    await call.hangup()
    done.set_result(None)


async def kicked_leg(client, sw, caller, res):
    """conference_remove of a Leg -> the leg stays up (parked); then move it from a room into uuid_bridge."""
    leg1 = await sw.originate(OriginateSpec(G("gwwait"), timeout=5))
    leg2 = await sw.originate(OriginateSpec(G("gwwait2"), timeout=5))
    await leg1.join_conference("h10kick")
    await leg2.join_conference("h10kick")
    await asyncio.sleep(1)
    await sw.conference_remove("h10kick", leg1.uuid)
    await asyncio.sleep(1)
    res["leg1_after_kick"] = await chan_state(client, leg1.uuid)
    res["leg1_cause"] = leg1.hangup_cause
    await leg2.bridge(leg1)  # leg2 leaves the room for a uuid_bridge
    await asyncio.sleep(1.5)
    res["leg2_bridged"] = await chan_state(client, leg2.uuid)
    res["leg1_bridged"] = await chan_state(client, leg1.uuid)
    await leg1.hangup()
    await asyncio.sleep(1)
    res["leg2_after_other_hangup"] = await chan_state(client, leg2.uuid)
    res["leg2_cause"] = leg2.hangup_cause
    await leg2.hangup()


async def bridge_dtmf(client, sw, caller, res):
    """DTMF of a leg in the caller's bridge room (Call.bridge) reaching Leg.on_dtmf; audio A -> leg."""
    call, done = await caller()
    got = []
    leg = await sw.originate(OriginateSpec(G("gwdtmf"), timeout=5))
    leg.on_dtmf(lambda d: (got.append(d), log("room on_dtmf", d)))
    await client.api(f"uuid_setvar {leg.uuid} RECORD_WRITE_ONLY true")
    await client.api(f"uuid_record {leg.uuid} start /tmp/h10/x/leg_hears.wav")
    task = asyncio.ensure_future(call.bridge(leg))
    await asyncio.sleep(0.5)
    a_other = call.info.variables.get("other_loopback_leg_uuid") or ""
    res["broadcast"] = (await client.api(f"uuid_broadcast {a_other} tone_stream://%(1500,0,1000) aleg", check=False)).strip()
    await asyncio.sleep(3)
    await client.api(f"uuid_record {leg.uuid} stop /tmp/h10/x/leg_hears.wav", check=False)
    await leg.hangup()
    r = await asyncio.wait_for(task, 10)
    res["bridge"] = (r.outcome.value, r.cause, r.caller_hung_up)
    res["digits"] = "".join(got)
    await call.hangup()
    done.set_result(None)


CASES = {f.__name__: f for f in (orig_answered, orig_busy, orig_noanswer, orig_cancel, take_park, music_move,
                                  call_bridge, three_way, hold, dtmf, kicked_leg, bridge_dtmf)}

asyncio.run(run())
