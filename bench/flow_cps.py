"""Calls per second one controller process sustains through the example IVR, on the simulator.

Two processes: the controller (switchctl's Controller on an outbound socket, exactly as `switchctl
run` serves calls) and, in this process, the FreeSWITCH simulator placing calls at a fixed rate with
callers who walk the IVR (see WALKS). Media and read timeouts run at `--media-speed` times real time so the
controller, not the prompts, is what is measured.

Reported per rate step: calls completed/failed, controller CPU time per call (-> calls/s per core),
reaction latency p50/p99 measured inside the controller (event frame parsed -> next command written),
and ESL bytes per call. The peer, measured in the same run on the same simulator: a minimal asyncio
outbound handler (answer, one playback, hangup; naive framing, `myevents`), the kind of code the
issue's "~3 ms CPU per call" figure refers to.

    .venv/bin/python bench/flow_cps.py                 # default steps
    .venv/bin/python bench/flow_cps.py --rates 100,300 --calls 600
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import sys
import time
import uuid as uuidlib
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from switchctl.aio import run  # noqa: E402  (uvloop when installed, as `switchctl run` uses)

SITE = ROOT / "examples" / "phonebar" / "site.yaml"
# Two walks through the example IVR. "booth" is the phone bar's common call: check the rates in the
# sub-menu, go back, dial a booth directly (transfer to it; the booth answers and hangs up).
# "tour" visits more: rates, back, hear one's own number said, hang up at the menu.
WALKS = {
    "booth": ["1", "1", "9", "1005"],
    "tour": ["1", "1", "9", "2", "hangup"],
}
# What each walk must have run on the switch: a call that took another path (a digit lost to an
# overloaded simulator's timer, say) counts as failed, so every figure is for the walk it names.
WALK_PROOF = {
    "booth": ("transfer", "1005 XML default"),
    "tour": ("say", "en number iterated 1001"),
    "minimal": ("playback", "tone_stream://%(500,0,400)"),
}
IVR_NUMBER = "9000"
BASELINE_NUMBER = "7000"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the controller process ---------------------------------------------------------------------


def controller_process(pipe, kind: str) -> None:
    profile_to = os.environ.get("FLOW_CPS_PROFILE")
    if profile_to and kind == "switchctl":  # profile the controller: FLOW_CPS_PROFILE=out.prof
        import cProfile

        cProfile.runctx("run(_controller_main(pipe, kind))", globals(), locals(), profile_to)
        return
    run(_controller_main(pipe, kind))


async def _controller_main(pipe, kind: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from switchctl.esl import connection as eslconn

    eslconn.REACTION_SAMPLES = []
    if kind == "switchctl":
        from switchctl.config.site import load_site
        from switchctl.controller import Controller
        from switchctl.esl.outbound import OutboundServer
        from switchctl.sitecheck import check_site

        site = load_site(SITE)
        flows = check_site(site).flows
        controller = Controller(site, flows)
        server = OutboundServer(lambda session: controller.handle_session(session, "fs1"), port=0)
        await server.start()
        port = server.port

        def counters() -> dict:
            s = controller.stats
            return {"calls": s.calls_finished, "failed": s.calls_failed,
                    "bytes_in": s.esl_bytes_in, "bytes_out": s.esl_bytes_out}
    else:
        minimal = MinimalHandler()
        srv = await asyncio.start_server(minimal.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]

        def counters() -> dict:
            return {"calls": minimal.calls, "failed": minimal.failed,
                    "bytes_in": minimal.bytes_in, "bytes_out": minimal.bytes_out}

    pipe.send(port)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_command() -> None:
        command = pipe.recv()
        if command == "snapshot":
            samples = eslconn.REACTION_SAMPLES or []
            pipe.send({"cpu": cpu_seconds(), "samples": list(samples), **counters()})
            samples.clear()
        elif command == "stop":
            done.set()

    loop.add_reader(pipe.fileno(), on_command)
    await done.wait()


class MinimalHandler:
    """The baseline: what a minimal hand-written asyncio outbound handler does for one call."""

    def __init__(self) -> None:
        self.calls = self.failed = self.bytes_in = self.bytes_out = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from switchctl.esl import connection as eslconn

        samples = eslconn.REACTION_SAMPLES
        last_event = 0.0

        async def read_frame() -> tuple[dict, bytes]:
            nonlocal last_event
            block = await reader.readuntil(b"\n\n")
            self.bytes_in += len(block)
            headers = dict(line.split(": ", 1) for line in block.decode().strip().split("\n"))
            body = b""
            if "Content-Length" in headers:
                body = await reader.readexactly(int(headers["Content-Length"]))
                self.bytes_in += len(body)
            if headers.get("Content-Type", "").startswith("text/event"):
                last_event = time.perf_counter()
            return headers, body

        def send(text: str) -> None:
            nonlocal last_event
            data = text.encode()
            writer.write(data)
            self.bytes_out += len(data)
            if samples is not None and last_event:
                samples.append(time.perf_counter() - last_event)
                last_event = 0.0

        async def command(text: str) -> dict:
            send(text)
            while True:
                headers, _ = await read_frame()
                if headers.get("Content-Type") in ("command/reply", "api/response"):
                    return headers

        async def execute(app: str, arg: str = "") -> None:
            event_uuid = str(uuidlib.uuid4())
            await command(f"sendmsg\ncall-command: execute\nexecute-app-name: {app}\n"
                          f"execute-app-arg: {arg}\nEvent-UUID: {event_uuid}\n\n")
            while True:
                headers, body = await read_frame()
                if headers.get("Content-Type") != "text/event-plain":
                    continue
                event = {k: unquote(v) for k, v in
                         (line.split(": ", 1) for line in body.decode().strip().split("\n") if ": " in line)}
                if event.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE" and \
                        event.get("Application-UUID") == event_uuid:
                    return

        try:
            await command("connect\n\n")
            await command("myevents\n\n")
            await command("linger\n\n")
            await execute("answer")
            await execute("playback", "tone_stream://%(500,0,400)")
            await command("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
            while True:  # until the linger disconnect-notice
                headers, _ = await read_frame()
                if headers.get("Content-Type") == "text/disconnect-notice":
                    break
            send("exit\n\n")
            self.calls += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            self.failed += 1
        finally:
            writer.close()


# -- the load generator (this process) ----------------------------------------------------------


async def run_step(sim, number: str, presses: list[str], rate: float, calls: int, pipe,
                   proof: tuple[str, str]) -> dict:
    from switchctl.flowtest import script_from_presses

    pipe.send("snapshot")
    before = pipe.recv()
    start = time.perf_counter()
    pending = []
    for index in range(calls):
        target = start + index / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(sim.place_call(destination=number, caller="1001",
                                      script=script_from_presses(presses)).done)
    results = await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - start
    await asyncio.sleep(0.3)  # let the controller close its last sessions
    pipe.send("snapshot")
    after = pipe.recv()
    handled = after["calls"] - before["calls"]
    failed = after["failed"] - before["failed"]
    bad = [r for r in results if isinstance(r, BaseException) or r.hangup_cause != "NORMAL_CLEARING"
           or proof not in [(app, arg) for app, arg, _ in r.apps]]
    if bad and os.environ.get("FLOW_CPS_DEBUG"):
        from collections import Counter
        print(Counter(r.hangup_cause if not isinstance(r, BaseException) else repr(r) for r in bad),
              [a for a, _, _ in bad[0].apps] if not isinstance(bad[0], BaseException) else "")
    samples = sorted(after["samples"])
    cpu = after["cpu"] - before["cpu"]
    return {
        "rate": rate,
        "calls": calls,
        "handled": handled,
        "failed": failed + len(bad),
        "achieved_cps": calls / wall,
        "cpu_ms_per_call": 1000 * cpu / max(handled, 1),
        "p50_ms": 1000 * samples[len(samples) // 2] if samples else float("nan"),
        "p99_ms": 1000 * samples[int(len(samples) * 0.99)] if samples else float("nan"),
        "kb_in_per_call": (after["bytes_in"] - before["bytes_in"]) / max(handled, 1) / 1000,
        "kb_out_per_call": (after["bytes_out"] - before["bytes_out"]) / max(handled, 1) / 1000,
    }


def start_controller(kind: str):
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=controller_process, args=(child, kind), daemon=True)
    proc.start()
    return proc, parent, parent.recv()


async def main_async(args) -> int:
    from switchctl.config.site import load_site
    from switchctl.flowtest import sim_routes
    from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
    from switchctl.sitecheck import check_site

    site = load_site(SITE)
    flows = check_site(site).flows
    ours, ours_pipe, ours_port = start_controller("switchctl")
    base, base_pipe, base_port = start_controller("minimal")
    # The example site's own dialplan (flow numbers -> our socket, booths -> bridge), plus the peer's number.
    dialplan = [Route(f"^{BASELINE_NUMBER}$", "socket", f"127.0.0.1:{base_port} async full")]
    dialplan += sim_routes(site, flows, f"127.0.0.1:{ours_port}")
    booths = {p.extension: UserBehaviour(registered=True, answer_after=0.2, hangup_after=0.5) for p in site.phones}
    sim = FreeSwitchSim(SimConfig(dialplan=dialplan, users=booths, media_speed=args.media_speed,
                                  sessions_per_second=100_000, max_sessions=100_000))
    await sim.start()
    rows = []
    try:
        for walk in args.walks:  # warm up both
            await run_step(sim, IVR_NUMBER, WALKS[walk], 50, 20, ours_pipe, WALK_PROOF[walk])
        await run_step(sim, BASELINE_NUMBER, [], 50, 20, base_pipe, WALK_PROOF["minimal"])
        for rate in args.rates:
            base_row = await run_step(sim, BASELINE_NUMBER, [], rate, args.calls, base_pipe,
                                      WALK_PROOF["minimal"])
            for walk in args.walks:
                ours_row = await run_step(sim, IVR_NUMBER, WALKS[walk], rate, args.calls, ours_pipe,
                                          WALK_PROOF[walk])
                rows.append((walk, ours_row, base_row))
    finally:
        await sim.close()
        for pipe, proc in ((ours_pipe, ours), (base_pipe, base)):
            pipe.send("stop")
            proc.join(5)

    print(f"flow_cps: {args.calls} calls per step, media x{args.media_speed:g}, controller in its own process")
    for walk in args.walks:
        print(f"  walk '{walk}': dial {IVR_NUMBER}, press {' '.join(WALKS[walk])}")
    print("  peer 'minimal': hand-written asyncio handler, myevents, answer + one playback + hangup")
    header = (f"{'who':<16} {'rate':>5} {'done/s':>7} {'fail':>5} {'cpu ms/call':>11} {'calls/s/core':>12} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'KB in/call':>10} {'KB out/call':>11}")
    print(header)
    shown_base = set()
    for walk, ours_row, base_row in rows:
        entries = [(f"switchctl {walk}", ours_row)]
        if id(base_row) not in shown_base:
            shown_base.add(id(base_row))
            entries.insert(0, ("minimal", base_row))
        for who, row in entries:
            per_core = 1000 / row["cpu_ms_per_call"] if row["cpu_ms_per_call"] else float("inf")
            print(f"{who:<16} {row['rate']:>5g} {row['achieved_cps']:>7.1f} {row['failed']:>5} "
                  f"{row['cpu_ms_per_call']:>11.2f} {per_core:>12.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                  f"{row['kb_in_per_call']:>10.1f} {row['kb_out_per_call']:>11.2f}")
        ratio = ours_row["cpu_ms_per_call"] / base_row["cpu_ms_per_call"]
        print(f"  ratio switchctl {walk} / minimal, CPU per call: {ratio:.2f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="calls per step (bounded: <= 5000)")
    parser.add_argument("--rates", default="100", help="calls/s steps (the simulator, in this process, keeps up to about 120)")
    parser.add_argument("--media-speed", type=float, default=20.0)
    parser.add_argument("--walks", default="booth,tour", help=f"IVR walks: {', '.join(WALKS)}")
    args = parser.parse_args()
    args.calls = min(args.calls, 5000)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.walks = [w for w in args.walks.split(",") if w]
    unknown = [w for w in args.walks if w not in WALKS]
    if unknown:
        parser.error(f"unknown walk(s): {', '.join(unknown)}")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
