"""How exactly prepaid calls are cut (issue 4): the cut instant against the paid time, on the switch's clock.

Each call is a booth calling a number through the `prepaid` + `dial` flow; the far end (gateway `upstream`)
answers and keeps talking; the booth's account holds money for a known paid time. What ends the call is the
cutoff. Per call:

    error = (B leg end µs − B leg answer µs) − paid µs

from the switch's own record of the B leg (`answer_uepoch` / `end_uepoch`, the values its CDR carries: read
from CHANNEL_HANGUP_COMPLETE, and on the simulator checked against the json_cdr file). Two modes in one run:

- `up`:   the controller runs the whole call: our timer cuts at the paid µs (the safety net stays armed);
- `down`: the controller process is SIGKILLed right after a batch of calls is answered, so only the
          switch-side safety net (`sched_hangup`, armed by the controller at answer) cuts.

Paid times: 1/1 rates (0.60 and 0.50 EUR/min, so money is not always a whole number of seconds' worth),
plus, unless `--long 0`, calls on a 30/6 and a 60/60 rate whose money covers part of the next block. Paid time
is always whole blocks from the answer (Rate.max_duration); starts are staggered by a non-round interval so
the answer instants, hence the exhaustion instants, fall all over the switch's second.

    .venv/bin/python bench/cutoff.py                         # 60 calls per mode, 10 at once, simulator
    .venv/bin/python bench/cutoff.py --calls 8 --long 0      # quick look
    .venv/bin/python bench/cutoff.py --switch-esl 127.0.0.1:8021:ClueCon --outbound-port 28084

Calls are placed over inbound ESL only (`originate loopback/<number>/default &park`, switchctl.calldriver), so
the same code drives the simulator and a real FreeSWITCH. The controller is the real `Controller` with a
SQLite billing store, in its own process (`--serve-controller`, started by this script).

What a real FreeSWITCH needs (`--switch-esl`): inbound ESL at HOST:PORT with that password, reachable from here;
in the dialplan context `default`, numbers `^44\\d+$` sent to `socket 127.0.0.1:<--outbound-port> async full`
(this machine's controller); a gateway named `upstream` whose far end answers within a few seconds and holds
the call (plays or stays silent) for at least 90 s without hanging up; the `loopback` endpoint loaded. The
controller is started with connect_inbound=False: every command of a call goes over its outbound socket.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK_US = 20_000  # FreeSWITCH's timestamp tick: "never earlier than the paid time by more than one tick"
TARGET_UP_P99_US = 40_000
TARGET_UP_MAX_US = 100_000
TARGET_DOWN_MAX_US = 1_500_000
MAX_CALLS = 400
MAX_CONCURRENT = 50

# prefix, per minute, initial block s, increment s (no connect fee). Rates are whole-second blocks.
RATES = {
    "4410": ("0.60", 1, 1),
    "4420": ("0.50", 1, 1),
    "4430": ("0.60", 30, 6),
    "4440": ("0.90", 60, 60),
}
RATES_CSV = "prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment\n" + "".join(
    f"{prefix},bench {init}/{inc},EUR,{per_minute},0,{init},{inc}\n" for prefix, (per_minute, init, inc) in RATES.items())
# Money per call (EUR, cents); paid time follows from the rate. 0.50/min 1/1: 0.04 pays 4 s, not 4.8 s.
SHORT_CREDITS = [("4410", c) for c in ("0.02", "0.03", "0.04", "0.05", "0.06")] + \
                [("4420", c) for c in ("0.02", "0.03", "0.04", "0.05")]
LONG_CREDITS = [("4430", "0.33"), ("4440", "1.20")]  # 30 s (not 33), 60 s (not 80)

SITE_YAML = """\
# written by bench/cutoff.py: a booth dials 44..., its own account (the caller number) pays, gateway upstream
site: cutoffbench
switches:
  - name: fs1
    kind: freeswitch
    esl: {{host: {esl_host}, port: {esl_port}, password: {esl_password}}}
    outbound: {{host: 127.0.0.1, port: {outbound_port}}}
    sip: {{ip: 127.0.0.1, port: 25060}}
    cdr: {{format: json, path: {cdr_dir}}}
database: {database}
flows: dialplans/
phones:
  - {{range: "1001-1002", name: "Booth {{n}}", booth: true, password: "booth-{{extension}}"}}
gateways:
  - {{name: upstream, proxy: 127.0.0.1:25090, register: false}}
billing:
  warning_seconds: {warning_seconds}
"""
FLOW_YAML = """\
flow: booth
patterns: ['^(44\\d+)$']
start: auth
nodes:
  auth:
    type: prepaid
    account: "${caller}"
    destination: "${1}"
    next: ring
    insufficient_funds: refused
  ring:
    type: dial
    to:
      - {gateway: upstream, number: "${1}"}
    timeout: 20
    next: bye
    failed: bye
  refused:
    type: play
    prompts: ["tone_stream://%(500,500,480,620);loops=2"]
    next: bye
  bye:
    type: hangup
"""


# -- the plan: who calls what with how much money ----------------------------------------------------------


def cost_cents(per_minute: str, billed_s: int) -> int:
    """Cost of `billed_s` seconds, rounded up to the cent (Rate's default rounding), from integers only."""
    per_minute_micros = int(round(float(per_minute) * 1_000_000))  # rates here have <= 2 decimals: exact
    numerator = per_minute_micros * billed_s
    micros = -(-numerator // 60)  # ceil to a micro-unit, then up to the cent
    return -(-micros // 10_000)


def paid_seconds(prefix: str, credit: str) -> int:
    """The longest whole-block talk time whose cost fits in `credit` (the bench's own arithmetic)."""
    per_minute, init, inc = RATES[prefix]
    budget = int(round(float(credit) * 100))
    if cost_cents(per_minute, init) > budget:
        return 0
    billed = init
    while cost_cents(per_minute, billed + inc) <= budget:
        billed += inc
    return billed


@dataclass
class PlannedCall:
    mode: str
    index: int
    caller: str  # also the account name
    number: str
    credit: str
    paid_us: int
    # measured
    b_answer_us: int | None = None
    b_end_us: int | None = None
    b_cause: str | None = None
    leg_cause: str | None = None
    cdr_checked: bool = False
    problem: str | None = None
    # simulator only: every `sched_hangup` the switch received for the call's leg: (wall µs, its `+N`)
    nets: list[tuple[int, str]] = field(default_factory=list)

    @property
    def net_second_late(self) -> bool | None:
        """The last net was armed for a later second than the first whole second at/after exhaustion."""
        if not self.nets or not self.b_answer_us or not self.nets[-1][1].startswith("+"):
            return None
        armed_us, when = self.nets[-1]
        fires_s = armed_us // 1_000_000 + int(when[1:])  # the simulator: floor(now) + N, as FreeSWITCH
        first_s = -(-(self.b_answer_us + self.paid_us) // 1_000_000)
        return fires_s > first_s

    @property
    def error_us(self) -> int | None:
        if self.b_answer_us is None or self.b_end_us is None or not self.b_answer_us:
            return None
        return (self.b_end_us - self.b_answer_us) - self.paid_us


def plan_calls(mode: str, calls: int, long_calls: int) -> list[PlannedCall]:
    """Long calls first (they overlap the short waves), then the short mix, round-robin over the credits."""
    mode_digit = {"up": "1", "down": "2"}[mode]
    plans: list[PlannedCall] = []
    long_calls = min(long_calls, calls)
    for index in range(calls):
        prefix, credit = (LONG_CREDITS[index % len(LONG_CREDITS)] if index < long_calls
                          else SHORT_CREDITS[(index - long_calls) % len(SHORT_CREDITS)])
        caller = f"{mode_digit}{index:04d}"
        number = f"{prefix}{mode_digit}{index:05d}"
        plans.append(PlannedCall(mode, index, caller, number, credit, paid_seconds(prefix, credit) * 1_000_000))
    return plans


# -- the controller process --------------------------------------------------------------------------------


def serve_controller(config_path: str) -> int:
    """Child process: run switchctl's Controller with billing on the bench's site until SIGTERM (or SIGKILL)."""
    from switchctl.aio import run

    return run(_serve_controller(json.loads(Path(config_path).read_text())))


async def _serve_controller(config: dict) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from switchctl.config.site import load_site
    from switchctl.controller import Controller
    from switchctl.sitecheck import check_site
    from switchctl.store.database import Store

    site = load_site(Path(config["site"]))
    checked = check_site(site)
    if not checked.ok:
        print(checked.report(), file=sys.stderr)
        return 2
    store = Store.open(site.database_url)
    controller = Controller(site, checked.flows, store=store)
    await controller.start(connect_inbound=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"READY {controller.servers['fs1'].port}", flush=True)
    await stop.wait()
    await controller.stop(grace=2)
    await store.engine.dispose()
    return 0


class ControllerProcess:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--serve-controller", str(self.config_path),
            stdout=subprocess.PIPE, cwd=str(ROOT))
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError("the controller process did not come up within 60 s") from None
        if not line.startswith(b"READY"):
            await self.proc.wait()
            raise RuntimeError(f"the controller process failed to start (exit {self.proc.returncode})")

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, the live calls keep only their switch-side safety nets."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        else:
            await self.proc.wait()


# -- the far-end legs, as the switch reports them ----------------------------------------------------------


@dataclass
class GatewayLegs:
    """CHANNEL_ANSWER / CHANNEL_HANGUP_COMPLETE of the gateway (B) legs, by the number they dialled."""

    answered: dict[str, asyncio.Event] = field(default_factory=dict)
    ended: dict[str, dict[str, str]] = field(default_factory=dict)
    ended_event: dict[str, asyncio.Event] = field(default_factory=dict)
    leg_uuid: dict[str, str] = field(default_factory=dict)

    def expect(self, number: str) -> None:
        self.answered[number] = asyncio.Event()
        self.ended_event[number] = asyncio.Event()

    def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
        name = event.name
        if name not in ("CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE"):
            return
        channel = event.get("Channel-Name") or ""
        if not channel.startswith("sofia/gateway/"):
            return
        number = event.get("Caller-Destination-Number") or channel.rsplit("/", 1)[-1]
        if number not in self.answered:
            return
        self.leg_uuid[number] = event.unique_id or ""
        if name == "CHANNEL_ANSWER":
            self.answered[number].set()
        else:
            self.ended[number] = {
                "answer_uepoch": event.variable("answer_uepoch") or "0",
                "end_uepoch": event.variable("end_uepoch") or "0",
                "billusec": event.variable("billusec") or "",
                "cause": event.get("Hangup-Cause") or "",
            }
            self.answered[number].set()  # unanswered and gone: nothing more to wait for
            self.ended_event[number].set()


# -- running the calls ---------------------------------------------------------------------------------------


@dataclass
class Bench:
    driver: object
    legs: GatewayLegs
    cdr_dir: Path | None
    sim: object | None
    stagger: float
    concurrency: int
    kill_after: float

    async def one_call(self, plan: PlannedCall) -> None:
        from switchctl.calldriver import CallDriverTimeout

        self.legs.expect(plan.number)
        timeout = plan.paid_us / 1e6 + 30
        try:
            outcome = await self.driver.call(plan.number, caller=plan.caller, timeout=timeout)  # type: ignore[attr-defined]
            plan.leg_cause = outcome.hangup_cause
        except CallDriverTimeout as exc:
            plan.problem = f"not cut within paid + 30 s (caller killed): {exc}"
            plan.leg_cause = exc.outcome.hangup_cause
        try:
            await asyncio.wait_for(self.legs.ended_event[plan.number].wait(), 10)
        except TimeoutError:
            plan.problem = plan.problem or "no gateway leg ended (did the dial happen?)"
            return
        record = self.legs.ended[plan.number]
        plan.b_answer_us, plan.b_end_us = int(record["answer_uepoch"]), int(record["end_uepoch"])
        plan.b_cause = record["cause"]
        if not plan.b_answer_us:
            plan.problem = plan.problem or f"far end never answered (cause {plan.b_cause})"
        elif plan.leg_cause != "ALLOTTED_TIMEOUT":  # our timer and sched_hangup both hang up with it
            plan.problem = plan.problem or f"the call ended with {plan.leg_cause}, not the cutoff's ALLOTTED_TIMEOUT"
        if self.cdr_dir is not None:
            self.check_cdr(plan)

    def check_cdr(self, plan: PlannedCall) -> None:
        """The simulator's json_cdr file of the B leg must carry the same instants as its hangup event."""
        uuid = self.legs.leg_uuid.get(plan.number, "")
        assert self.cdr_dir is not None
        for folder in (self.cdr_dir, self.cdr_dir / "done"):
            path = folder / f"{uuid}.cdr.json"
            if path.exists():
                variables = json.loads(path.read_text())["variables"]
                if (int(variables["answer_uepoch"]), int(variables["end_uepoch"])) != (plan.b_answer_us, plan.b_end_us):
                    plan.problem = plan.problem or "json_cdr and CHANNEL_HANGUP_COMPLETE disagree"
                plan.cdr_checked = True
                return
        plan.problem = plan.problem or f"no json_cdr file for B leg {uuid}"

    async def run_up(self, plans: list[PlannedCall], controller: ControllerProcess) -> None:
        """Controller up all along: at most `concurrency` calls at once, starts `stagger` s apart."""
        await controller.start()
        slots = asyncio.Semaphore(self.concurrency)
        tasks = []

        async def guarded(plan: PlannedCall) -> None:
            try:
                await self.one_call(plan)
            finally:
                slots.release()

        for plan in plans:
            await slots.acquire()
            tasks.append(asyncio.create_task(guarded(plan)))
            await asyncio.sleep(self.stagger)
        await asyncio.gather(*tasks)
        await controller.stop()

    async def run_down(self, plans: list[PlannedCall], controller: ControllerProcess) -> list[int]:
        """Batches of `concurrency` calls; the controller is SIGKILLed once the batch is answered, then restarted."""
        nets_at_kill: list[int] = []
        for start in range(0, len(plans), self.concurrency):
            batch = plans[start:start + self.concurrency]
            await controller.start()
            tasks = []
            for plan in batch:
                tasks.append(asyncio.create_task(self.one_call(plan)))
                await asyncio.sleep(self.stagger)
            await asyncio.sleep(0)  # let the last call register its gateway leg
            try:
                await asyncio.wait_for(asyncio.gather(*(self.legs.answered[p.number].wait() for p in batch)), 30)
            except TimeoutError:
                pass  # the unanswered ones are reported per call
            await asyncio.sleep(self.kill_after)
            nets_at_kill.append(self.armed_nets(batch))
            controller.kill()
            await asyncio.gather(*tasks)
            await controller.stop()  # reap it
        return nets_at_kill

    def armed_nets(self, batch: list[PlannedCall]) -> int:
        """Simulator only: how many of the batch's calls have a sched_hangup armed on the switch right now."""
        if self.sim is None:
            return -1
        armed = 0
        for channel in list(self.sim.channels.values()):  # type: ignore[attr-defined]
            if channel.sched_hangup_tasks and channel.data.destination in {p.number for p in batch}:
                armed += 1
        return armed


# -- statistics ---------------------------------------------------------------------------------------------


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest rank: the smallest value with at least q of the values at or below it (p99 of < 100 = max)."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(mode: str, plans: list[PlannedCall]) -> dict:
    errors = sorted(e for e in (p.error_us for p in plans) if e is not None)
    measured = len(errors)
    problems = [p for p in plans if p.problem is not None or p.error_us is None]
    row: dict = {"mode": mode, "calls": len(plans), "measured": measured, "problems": len(problems),
                 "problem_lines": [f"{p.caller} -> {p.number}: {p.problem or 'no measurement'}" for p in problems]}
    if not errors:
        row["holds"] = False
        return row
    abs_sorted = sorted(abs(e) for e in errors)
    row.update(p50_us=percentile(errors, 0.50), p99_us=percentile(errors, 0.99), max_us=errors[-1],
               min_us=errors[0], abs_p99_us=percentile(abs_sorted, 0.99), abs_max_us=abs_sorted[-1],
               causes=sorted({p.b_cause or "?" for p in plans}),
               leg_causes=sorted({p.leg_cause or "?" for p in plans}))
    never_early = errors[0] >= -TICK_US
    if mode == "up":
        checks = {"|error| p99 <= 40 ms": row["abs_p99_us"] <= TARGET_UP_P99_US,
                  "|error| max <= 100 ms": row["abs_max_us"] <= TARGET_UP_MAX_US,
                  "never early by more than one 20 ms tick": never_early}
    else:
        checks = {"cut no later than 1.5 s after exhaustion": errors[-1] <= TARGET_DOWN_MAX_US,
                  "never early by more than one 20 ms tick": never_early}
    late = [p for p in plans if p.net_second_late]
    if any(p.nets for p in plans):
        row["nets_a_second_late"] = len(late)
        row["late_arm_fractions_ms"] = sorted(round(p.nets[-1][0] % 1_000_000 / 1000, 1) for p in late)
    checks["every call measured, no problem"] = not problems
    row["checks"] = checks
    row["holds"] = all(checks.values())
    return row


def print_report(rows: list[dict], args, nets_at_kill: list[int], took: float) -> None:  # type: ignore[no-untyped-def]
    where = f"FreeSWITCH at {args.switch_esl.rsplit(':', 1)[0]}" if args.switch_esl else "simulator"
    print(f"cutoff: {args.calls} calls per mode on the {where}, {args.concurrency} at once, starts "
          f"{args.stagger:g} s apart, {min(args.long, args.calls)} long (30/6, 60/60); took {took:.0f} s; "
          f"load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("error = (B hangup µs − B answer µs) − paid µs, switch clock (B leg answer_uepoch/end_uepoch)")
    print(f"{'mode':<6} {'calls':>5} {'measured':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'min ms':>8} "
          f"{'|e| p99':>8} {'holds':>6}")
    for row in rows:
        if "p50_us" not in row:
            print(f"{row['mode']:<6} {row['calls']:>5} {row['measured']:>8}  (nothing measured)")
            continue
        print(f"{row['mode']:<6} {row['calls']:>5} {row['measured']:>8} {row['p50_us'] / 1000:>8.1f} "
              f"{row['p99_us'] / 1000:>8.1f} {row['max_us'] / 1000:>8.1f} {row['min_us'] / 1000:>8.1f} "
              f"{row['abs_p99_us'] / 1000:>8.1f} {'yes' if row['holds'] else 'NO':>6}")
    for row in rows:
        for name, ok in row.get("checks", {}).items():
            print(f"  {row['mode']}: {name}: {'met' if ok else 'NOT met'}")
        for line in row["problem_lines"][:10]:
            print(f"  {row['mode']} problem: {line}")
        if row.get("causes"):
            print(f"  {row['mode']}: hangup causes: caller's leg {', '.join(row['leg_causes'])}; "
                  f"B leg {', '.join(row['causes'])}")
        if "nets_a_second_late" in row:
            print(f"  {row['mode']}: nets armed for a later second than the first whole second at/after "
                  f"exhaustion: {row['nets_a_second_late']}/{row['calls']} (armed at these ms into a second: "
                  f"{row['late_arm_fractions_ms']})")
    if nets_at_kill and nets_at_kill[0] >= 0:
        print(f"  down: safety nets armed on the switch at each SIGKILL, per batch: {nets_at_kill}")


# -- setup and main ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def record_nets(sim, by_number: dict[str, PlannedCall]) -> None:  # type: ignore[no-untyped-def]
    """Simulator only: note when each call's safety net reached the switch and what it asked for."""
    from switchctl.sim import api as simapi

    original = simapi.COMMANDS["sched_hangup"]

    def recording(sim_, args: str) -> str:  # type: ignore[no-untyped-def]
        argv = args.split()
        channel = sim_.channels.get(argv[1]) if len(argv) > 1 else None
        plan = by_number.get(channel.data.destination) if channel is not None else None
        if plan is not None:
            plan.nets.append((time.time_ns() // 1000, argv[0]))
        return original(sim_, args)

    simapi.COMMANDS["sched_hangup"] = recording


async def prepare_store(db_url: str, plans: list[PlannedCall]) -> None:
    """Rates and one funded account per call, written before any controller starts."""
    from switchctl.billing.accounts import Accounts
    from switchctl.billing.ledger import Ledger
    from switchctl.billing.money import Money, currency
    from switchctl.billing.ratestore import RateStore
    from switchctl.features.prepaid.cutoff import wall_us
    from switchctl.store.database import Store

    eur = currency("EUR")
    store = Store.open(db_url)
    try:
        await store.create_all()
        await RateStore(store).import_text(RATES_CSV, "bench-rates.csv")
        accounts, ledger = Accounts(store, wall_us), Ledger(store, wall_us)
        for plan in plans:
            account = await accounts.create("booth", plan.caller, eur)
            await ledger.topup(account.id, Money.parse(plan.credit, eur), f"cutoffbench-{plan.caller}")
        book = await RateStore(store).load()
        for plan in plans:  # the bench's own arithmetic must agree with the billing code's
            found = book.find(plan.number, at_us=wall_us())
            assert found is not None, plan.number
            expected = found.rate.max_duration(Money.parse(plan.credit, eur))
            if expected != plan.paid_us:
                raise AssertionError(f"{plan.number} {plan.credit}: bench says {plan.paid_us} µs paid, "
                                     f"Rate.max_duration {expected}")
    finally:
        await store.engine.dispose()


async def main_async(args) -> int:  # type: ignore[no-untyped-def]
    from switchctl.calldriver import DRIVER_EVENTS, EslCallDriver
    from switchctl.esl.inbound import InboundClient

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cutoffbench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "dialplans").mkdir(exist_ok=True)
    cdr_dir = work / "cdr"
    cdr_dir.mkdir(exist_ok=True)
    db_path = work / "billing.db"
    if db_path.exists():
        db_path.unlink()
    db_url = f"sqlite+aiosqlite:///{db_path}"
    outbound_port = args.outbound_port or free_port()

    modes = [m for m in ("up", "down") if m in args.modes]
    plans = {mode: plan_calls(mode, args.calls, args.long) for mode in modes}
    await prepare_store(db_url, [p for mode in modes for p in plans[mode]])

    sim = None
    if args.switch_esl:
        host, port_text, password = args.switch_esl.split(":", 2)
        esl_host, esl_port, esl_password = host, int(port_text), password
    else:
        esl_host, esl_port, esl_password = "127.0.0.1", 0, "ClueCon"
    site_text = SITE_YAML.format(esl_host=esl_host, esl_port=esl_port or 8021, esl_password=esl_password,
                                 outbound_port=outbound_port, cdr_dir=str(cdr_dir), database=db_url,
                                 warning_seconds=args.warning_seconds)
    (work / "site.yaml").write_text(site_text)
    (work / "dialplans" / "booth.yaml").write_text(FLOW_YAML)
    config_path = work / "controller.json"
    config_path.write_text(json.dumps({"site": str(work / "site.yaml")}))

    if not args.switch_esl:
        from switchctl.config.site import load_site
        from switchctl.flowtest import sim_routes
        from switchctl.sim import FreeSwitchSim, GatewayBehaviour, SimConfig
        from switchctl.sitecheck import check_site

        site = load_site(work / "site.yaml")
        checked = check_site(site)
        if not checked.ok:
            print(checked.report(), file=sys.stderr)
            return 2
        sim = FreeSwitchSim(SimConfig(
            dialplan=sim_routes(site, checked.flows, f"127.0.0.1:{outbound_port}"),
            gateways={"upstream": GatewayBehaviour(answer_after=0.2, hangup_after=None)},
            media_speed=1.0, sessions_per_second=10_000, max_sessions=10_000, cdr_dir=cdr_dir,
            max_call_seconds=200.0))
        await sim.start()
        esl_port = sim.esl_port
        record_nets(sim, {p.number: p for mode in modes for p in plans[mode]})

    client = InboundClient(esl_host, esl_port, esl_password, events=DRIVER_EVENTS, event_format="plain",
                           name="cutoffbench")
    driver = EslCallDriver(client, context="default")
    legs = GatewayLegs()
    client.add_event_handler(legs.on_event)
    bench = Bench(driver, legs, cdr_dir if sim is not None else None, sim, args.stagger, args.concurrency,
                  args.kill_after)
    controller = ControllerProcess(config_path)
    started = time.monotonic()
    nets_at_kill: list[int] = []
    rows = []
    try:
        await driver.start()
        for mode in modes:
            if mode == "up":
                await bench.run_up(plans[mode], controller)
            else:
                nets_at_kill = await bench.run_down(plans[mode], controller)
            rows.append(summarize(mode, plans[mode]))
    finally:
        controller.kill()
        await controller.stop()
        await driver.close()
        if sim is not None:
            await sim.close()
    took = time.monotonic() - started
    print_report(rows, args, nets_at_kill, took)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": rows, "nets_at_kill": nets_at_kill, "took_s": took, "load": os.getloadavg(),
            "calls": [dataclasses.asdict(p) | {"error_us": p.error_us, "net_second_late": p.net_second_late} for mode in modes for p in plans[mode]],
        }, indent=1, default=str))
    return 0 if all(row["holds"] for row in rows) else 1


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-controller":
        return serve_controller(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=60, help=f"calls per mode (bounded: <= {MAX_CALLS})")
    parser.add_argument("--concurrency", type=int, default=10, help="calls at once (and the 'down' batch size)")
    parser.add_argument("--stagger", type=float, default=0.173,
                        help="seconds between starts; not a round number so answers fall all over the second")
    parser.add_argument("--long", type=int, default=6, help="calls on the 30/6 and 60/60 rates (30 s and 60 s paid)")
    parser.add_argument("--modes", default="up,down", help="up (our timer), down (controller SIGKILLed)")
    parser.add_argument("--kill-after", type=float, default=0.25,
                        help="'down': seconds between the batch's last answer and the SIGKILL")
    parser.add_argument("--warning-seconds", type=int, default=1, help="the credit warning before the cut")
    parser.add_argument("--switch-esl", metavar="HOST:PORT:PASSWORD", help="a real FreeSWITCH instead of the simulator")
    parser.add_argument("--outbound-port", type=int, default=0,
                        help="the controller's outbound socket port (a real FreeSWITCH's dialplan names it)")
    parser.add_argument("--workdir", help="site, database and CDR folder (default: a new temporary folder)")
    parser.add_argument("--json", help="also write the rows and every call as JSON here")
    args = parser.parse_args()
    if not 1 <= args.calls <= MAX_CALLS:
        parser.error(f"--calls must be 1..{MAX_CALLS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENT:
        parser.error(f"--concurrency must be 1..{MAX_CONCURRENT}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("up", "down") for m in args.modes):
        parser.error("--modes: up, down or up,down")
    if args.switch_esl and args.switch_esl.count(":") < 2:
        parser.error("--switch-esl HOST:PORT:PASSWORD")
    if args.switch_esl and not args.outbound_port:
        parser.error("--switch-esl needs --outbound-port (the port the switch's dialplan sends calls to)")
    from switchctl.aio import run

    return run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
