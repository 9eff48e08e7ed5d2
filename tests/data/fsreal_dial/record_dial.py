"""How tests/data/fsreal_dial was recorded: drive FreeSwitchCall.dial / announce on a real FreeSWITCH. Usage: record_dial.py CASE [CASE...]"""
import asyncio, json, sys, time, uuid as uuidlib, traceback

sys.path.insert(0, "/work/main")
from switchctl.esl.inbound import InboundClient
from switchctl.esl.outbound import OutboundServer
from switchctl.switch.call import DialSpec, DialTarget, CallGone
from switchctl.switch.freeswitch import CALL_EVENTS, FreeSwitchCall, call_info_from_channel_data

G = lambda gw, t=None: DialTarget("gateway", "5551234", gateway=gw, timeout=t)
EVENTS = ("BACKGROUND_JOB", "CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE",
          "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE", "PLAYBACK_START", "PLAYBACK_STOP")

state = {}


def log(*a):
    print(f"{time.time():.3f}", *a, flush=True)


async def case_body(name, call, client, caller_uuid):
    answers = []

    async def on_answer(ans):
        answers.append(ans)
        log("on_answer", ans)
        if name == "announce_then_hangup":
            await client.api(f"uuid_setvar {ans.peer_uuid} RECORD_WRITE_ONLY true")
            await client.api(f"uuid_record {ans.peer_uuid} start ./b_hears.wav")
            asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(announce(call)))
            asyncio.get_running_loop().call_later(5.0, lambda: asyncio.ensure_future(call.hangup()))
        if name == "caller_hangup_bridge":
            asyncio.get_running_loop().call_later(1.5, lambda: asyncio.ensure_future(client.api(f"uuid_kill {caller_uuid}")))
        if name == "our_hangup_bridge":
            asyncio.get_running_loop().call_later(1.5, lambda: asyncio.ensure_future(call.hangup()))

    async def announce(c):
        log("announce ->")
        await c.announce("tone_stream://%(1000,0,800);loops=2")
        log("announce accepted")

    specs = {
        "answered": DialSpec([[G("gwans")]]),
        "busy": DialSpec([[G("gwbusy")]]),
        "rejected": DialSpec([[G("gwdecl")]]),
        "no_answer": DialSpec([[G("gwring")]], timeout=4),
        "unreachable": DialSpec([[G("gwdead")]], timeout=10),
        "unregistered": DialSpec([[DialTarget("phone", "1002")]]),
        "sequential": DialSpec([[G("gwbusy")], [G("gwring", 3)], [G("gwans")]]),
        "simultaneous": DialSpec([[G("gwring"), G("gwans"), G("gwbusy")]]),
        "simul_all_fail": DialSpec([[G("gwbusy"), G("gwdecl")]]),
        "simul_all_fail2": DialSpec([[G("gwdecl"), G("gwring", 3)]]),
        "simul_ring_busy": DialSpec([[G("gwring", 3), G("gwbusy")]]),
        "simul_ring_decl_busy": DialSpec([[G("gwring", 3), G("gwdecl"), G("gwbusy")]]),
        "seq_busy_decl": DialSpec([[G("gwbusy")], [G("gwdecl")]]),
        "simul_unreg_busy": DialSpec([[DialTarget("phone", "1002"), G("gwbusy")]]),
        "simul_busy_unreg": DialSpec([[G("gwbusy"), DialTarget("phone", "1002")]]),
        "seq_busy_unreg": DialSpec([[G("gwbusy")], [DialTarget("phone", "1002")]]),
        "caller_hangup_ringing": DialSpec([[G("gwring")]], timeout=20),
        "caller_hangup_bridge": DialSpec([[G("gwwait")]]),
        "announce_then_hangup": DialSpec([[G("gwwait")]]),
        "our_hangup_bridge": DialSpec([[G("gwwait")]]),
    }
    spec = specs[name]
    spec = DialSpec(spec.groups, timeout=spec.timeout, on_answer=on_answer, variables={"absolute_codec_string": "PCMU"})
    if name == "caller_hangup_ringing":
        asyncio.get_running_loop().call_later(2.0, lambda: asyncio.ensure_future(client.api(f"uuid_kill {caller_uuid}")))
    t0 = time.time()
    try:
        result = await call.dial(spec)
        log("RESULT", result, "talk_us", result.talk_us, "elapsed", round(time.time() - t0, 2))
        state["result"] = {"outcome": result.outcome.value, "cause": result.cause, "peer": result.peer_uuid,
                           "answered_at_us": result.answered_at_us, "ended_at_us": result.ended_at_us,
                           "talk_us": result.talk_us, "caller_hung_up": result.caller_hung_up,
                           "target": result.target and result.target.gateway,
                           "on_answer": [a.answered_at_us for a in answers],
                           "on_answer_peer": [a.peer_uuid for a in answers]}
    except CallGone as exc:
        log("CallGone", exc.cause, "elapsed", round(time.time() - t0, 2))
        state["result"] = {"raised": "CallGone", "cause": exc.cause, "on_answer": [a.answered_at_us for a in answers]}
    except Exception as exc:
        traceback.print_exc()
        state["result"] = {"raised": repr(exc)}
    # after the dial: is the call still usable?
    if call.hangup_cause is None:
        try:
            await call.play(["silence_stream://200"])
            state["result"]["after"] = "play ok"
        except CallGone as exc:
            state["result"]["after"] = f"CallGone {exc.cause}"


async def main(cases):
    client = InboundClient("127.0.0.1", 8031, "ClueCon", events=EVENTS, event_format="plain")
    await client.connect()
    events = []
    client.add_event_handler(lambda e: events.append(e))
    done_q: asyncio.Queue = asyncio.Queue()

    async def handler(session):
        data = await session.connect()
        info = call_info_from_channel_data(data, "fs1")
        await session.subscribe(CALL_EVENTS)
        await session.linger()
        call = FreeSwitchCall(session, info)
        try:
            await call.answer()
            await case_body(info.caller_name, call, client, info.variables.get("other_loopback_leg_uuid", ""))
        finally:
            if call.hangup_cause is None:
                await call.hangup()
            await done_q.put(info.caller_name)

    server = OutboundServer(handler, port=8095)
    await server.start()
    summary = {}
    for name in cases:
        events.clear()
        state.clear()
        a_uuid = str(uuidlib.uuid4())
        log("=====", name, a_uuid)
        await client.bgapi(f"originate {{origination_uuid={a_uuid},origination_caller_id_name={name},"
                           f"origination_caller_id_number=1001}}loopback/9000/default &park")
        try:
            await asyncio.wait_for(done_q.get(), 60)
        except asyncio.TimeoutError:
            log("TIMEOUT")
        await asyncio.sleep(2)
        count = await client.api("show channels count")
        res = state.get("result", {})
        res["channels_after"] = count.strip()
        # B legs: everything whose channel name is sofia/...
        legs = {}
        for e in events:
            cn = e.get("Channel-Name") or ""
            if not cn.startswith("sofia/"):
                continue
            u = e.get("Unique-ID")
            leg = legs.setdefault(u, {"name": cn})
            if e.name == "CHANNEL_ANSWER":
                leg["answer_ev_us"] = e.get("Caller-Channel-Answered-Time")
            if e.name == "CHANNEL_BRIDGE":
                leg["bridge_other_answered"] = e.get("Other-Leg-Channel-Answered-Time")
            if e.name == "CHANNEL_HANGUP_COMPLETE":
                leg.update(cause=e.get("Hangup-Cause"), answered_at=e.get("Caller-Channel-Answered-Time"),
                           hangup_at=e.get("Caller-Channel-Hangup-Time"), billusec=e.get("variable_billusec"),
                           end_uepoch=e.get("variable_end_uepoch"), answer_uepoch=e.get("variable_answer_uepoch"),
                           sip_term=e.get("variable_sip_term_status"))
        a_bridge = [e for e in events if e.name == "CHANNEL_BRIDGE" and not (e.get("Channel-Name") or "").startswith("sofia/")]
        if a_bridge:
            res["A_bridge_other_answered"] = a_bridge[0].get("Other-Leg-Channel-Answered-Time")
        res["b_legs"] = legs
        res["event_names"] = [f"{e.name}:{(e.get('Channel-Name') or '')[:22]}" for e in events]
        summary[name] = res
        log(json.dumps(res, indent=1))
        with open(f"./events_{name}.txt", "w") as f:
            for e in events:
                f.write(f"=== {e.name}\n")
                for k, v in e.headers.items():
                    f.write(f"{k}: {v}\n")
    json.dump(summary, open(f"./summary_{int(time.time())}.json", "w"), indent=1)
    await server.close()
    await client.close()


asyncio.run(main(sys.argv[1:]))
