"""`switchctl` command line: run, check, render, deploy, flow test."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from . import aio
from .config.yamlsrc import SourceError
from .logs import setup_logging

log = logging.getLogger("switchctl.cli")

DEFAULT_SITE = "site.yaml"


def _load_site(path: str):
    from .config.site import load_site

    return load_site(Path(path))


def _check(site, *, quiet: bool = False):
    """Validate the site's flows; returns (flowset, error_count) after printing diagnostics."""
    from .sitecheck import check_site

    result = check_site(site)
    errors = 0
    for diag in result.diagnostics:
        if diag.severity == "error":
            errors += 1
        if not quiet or diag.severity == "error":
            print(str(diag), file=sys.stderr if diag.severity == "error" else sys.stdout)
    return result.flows, errors


# -- commands --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    site = _load_site(args.config)
    flows, errors = _check(site)
    if errors:
        print(f"{errors} error(s)", file=sys.stderr)
        return 1
    print(f"ok: site '{site.name}', {len(flows)} flow(s)")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .render import pick_any_switch, render_site, write_tree

    site = _load_site(args.config)
    sw = pick_any_switch(site, args.switch)
    files = render_site(site, sw.name)
    write_tree(files, Path(args.out), prune=args.prune)
    print(f"rendered {len(files)} {sw.kind} file(s) for switch {sw.name} into {args.out}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .render import pick_any_switch, render_site
    from .render.deploy import DeployError, deploy

    site = _load_site(args.config)
    _, errors = _check(site, quiet=True)
    if errors:
        print("refusing to deploy: the flows have errors (run switchctl check)", file=sys.stderr)
        return 1
    sw = pick_any_switch(site, args.switch)
    conf_dir = Path(args.conf_dir or sw.conf_dir)

    async def go() -> int:
        if sw.kind == "asterisk":
            from .render.asterisk import asterisk_sound_files, sounds_subdir
            from .render.asterisk_reload import asterisk_reloader, files_only_reload

            assert sw.ari is not None and sw.sounds_dir is not None
            reload = asterisk_reloader(sw.ari, conf_dir)
        else:
            from .render.eslreload import freeswitch_reloader

            assert sw.esl is not None
            reload = freeswitch_reloader(sw.esl.host, sw.esl.port, sw.esl.password, name=sw.name)
        try:
            if sw.kind == "asterisk":
                # prompts first: the new dialplan may already play them
                sounds = await deploy(asterisk_sound_files(site), sw.sounds_dir / sounds_subdir(site),
                                      files_only_reload, force=args.force)
                print(sounds.summary())
            result = await deploy(render_site(site, sw.name), conf_dir, reload, force=args.force)
        except DeployError as exc:
            print(f"deploy failed, previous configuration restored: {exc}", file=sys.stderr)
            return 1
        print(result.summary())
        return 0

    return aio.run(go())


def _freeswitches(site, name: str | None):
    switches = [s for s in site.switches if s.kind == "freeswitch" and (not name or s.name == name)]
    if not switches:
        raise SystemExit(f"no FreeSWITCH switch{' named ' + name if name else ''} in the site")
    return switches


async def _ask_each_switch(site, name: str | None, command: str, show) -> int:
    """Run one api command on each FreeSWITCH of the site; `show(switch, text)` prints the answer.
    Returns 1 when any switch could not be asked (each one is reported)."""
    from .esl.errors import ESLError
    from .esl.inbound import InboundClient

    failed = 0
    for sw in _freeswitches(site, name):
        client = InboundClient(sw.esl.host, sw.esl.port, sw.esl.password, name=sw.name, events=())
        try:
            await client.connect()
            text = await client.api(command)
        except (ESLError, OSError) as exc:
            failed += 1
            print(f"{sw.name} ({sw.esl.host}:{sw.esl.port}): DOWN: {exc}")
            continue
        finally:
            await client.close()
        show(sw, text)
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    """`api status` of each switch over its event socket; exit 1 if any is unreachable."""
    site = _load_site(args.config)

    def show(sw, text: str) -> None:
        print(f"{sw.name} ({sw.esl.host}:{sw.esl.port}): up")
        for line in text.strip().splitlines():
            print(f"  {line}")

    return aio.run(_ask_each_switch(site, args.switch, "status", show))


def cmd_calls(args: argparse.Namespace) -> int:
    """Live calls of each switch (`show channels as json`)."""
    import json as jsonlib

    site = _load_site(args.config)

    def show(sw, text: str) -> None:
        try:
            rows = jsonlib.loads(text).get("rows", [])
        except ValueError:
            print(f"{sw.name}: unreadable answer to show channels: {text[:200]!r}")
            return
        print(f"{sw.name}: {len(rows)} channel(s)")
        for row in rows:
            print(f"  {row.get('uuid', '')}  {row.get('state', ''):<12} {row.get('cid_num', '')} -> "
                  f"{row.get('dest', '')}  {row.get('application', '')} {row.get('created', '')}")

    return aio.run(_ask_each_switch(site, args.switch, "show channels as json", show))


def cmd_call(args: argparse.Namespace) -> int:
    """Place a call on the site's switch over its event socket (a loopback call, steered with
    uuid_send_dtmf) and print what the switch ran: a live check of a running controller."""
    from .calldriver import DRIVER_EVENTS, CallDriverTimeout, EslCallDriver
    from .esl.errors import ESLError
    from .esl.inbound import InboundClient

    site = _load_site(args.config)
    sw = _freeswitches(site, args.switch)[0]

    async def go() -> int:
        client = InboundClient(sw.esl.host, sw.esl.port, sw.esl.password, name=sw.name,
                               events=DRIVER_EVENTS, event_format="plain")
        driver = EslCallDriver(client)
        try:
            await driver.start()
            outcome = await driver.call(args.number, args.press, caller=args.caller, timeout=args.timeout)
        except CallDriverTimeout as exc:
            print(f"call did not end within {args.timeout:g} s: {exc}", file=sys.stderr)
            return 1
        except (ESLError, OSError) as exc:
            print(f"cannot reach {sw.name} at {sw.esl.host}:{sw.esl.port}: {exc}", file=sys.stderr)
            return 1
        finally:
            await driver.close()
        print(f"call {args.caller} -> {args.number} on {sw.name}: {outcome.originate or ''}")
        for app, arg, response in outcome.apps:
            print(f"  {app} {arg}".rstrip() + (f"  [{response}]" if response not in ("", "_none_") else ""))
        print(f"hangup: {outcome.hangup_cause}" + (f", billed {outcome.billusec / 1e6:.3f} s"
                                                     if outcome.billusec is not None else ""))
        return 0 if outcome.uuid is not None else 1

    return aio.run(go())


def cmd_sipcall(args: argparse.Namespace) -> int:
    """A real SIP call with sipp to the site's Asterisk (RFC 2833 presses), watched over ARI."""
    from .democall import DemoCallError, SipTarget, format_result, place_call

    site = _load_site(args.config)
    switches = [s for s in site.switches if s.kind == "asterisk" and (not args.switch or s.name == args.switch)]
    if not switches:
        print(f"no Asterisk switch{' named ' + args.switch if args.switch else ''} in the site "
              "(for FreeSWITCH: switchctl call)", file=sys.stderr)
        return 1
    sw = switches[0]
    # the watcher's own connects and retries are no news: an unwatched call is said in the report
    logging.getLogger("switchctl.ari").setLevel(logging.ERROR)
    try:
        result = aio.run(place_call(SipTarget(sw.sip.host, sw.sip.port), args.number, args.press,
                                    caller=args.caller, timeout_s=args.timeout, ari=sw.ari))
    except DemoCallError as exc:
        print(f"sipcall: {exc}", file=sys.stderr)
        return 1
    print(format_result(result, presses=args.press))
    return 0 if result.ok else 1


def cmd_account(args: argparse.Namespace) -> int:
    """`switchctl account create|topup|show`: prepaid accounts in the site's store."""
    import time
    import uuid as uuidlib

    from .billing.accounts import AccountError, Accounts
    from .billing.ledger import IdempotencyConflict, Ledger, UnknownAccount
    from .billing.money import CurrencyMismatch, Money, currency
    from .store import Store, StoreError

    site = _load_site(args.config)

    def clock() -> int:
        return time.time_ns() // 1000

    async def go() -> int:
        store = Store.open(site.database_url)
        try:
            await store.create_all()
            accounts, ledger = Accounts(store, clock), Ledger(store, clock)
            if args.account_command == "create":
                account = await accounts.create(args.kind, args.name, currency(args.currency), tenant=args.tenant,
                                                account_class=args.account_class, pin=args.pin)
                print(f"created {account.kind} account '{account.name}' ({account.currency.code}), id {account.id}")
            elif args.account_command == "topup":
                account = await accounts.named(args.name, tenant=args.tenant)
                key = args.key or f"cli-topup:{uuidlib.uuid4()}"
                entry = await ledger.topup(account.id, Money.parse(args.amount, account.currency), key,
                                          note=args.note or "")
                print(f"topped up '{account.name}' by {args.amount} {account.currency.code}"
                      + (" (already done: same key)" if entry.replayed else ""))
            summary = await accounts.summary(ledger, args.name, tenant=args.tenant)
            totals = summary.totals
            print(f"{summary.account.name}: balance {totals.balance.format()}, held {totals.held.format()}, "
                  f"available {totals.available.format()} {summary.account.currency.code}")
            for reservation in summary.reservations:
                print(f"  live: {reservation}")
            for entry in summary.recent:
                print(f"  {entry.kind:<10} {entry.amount.format():>14}  {entry.note}")
            return 0
        except (AccountError, UnknownAccount, IdempotencyConflict, CurrencyMismatch, StoreError, ValueError) as exc:
            print(f"account {args.account_command}: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    return aio.run(go())


def _wall_clock_us() -> int:
    import time

    return time.time_ns() // 1000


def _seconds_to_us(text: str) -> int:
    """'65' or '65.5' seconds → µs, exactly (no float)."""
    import re

    m = re.fullmatch(r"(\d{1,9})(?:\.(\d{1,6}))?", text.strip())
    if not m:
        raise ValueError(f"--seconds '{text}' is not a number of seconds like 65 or 65.5")
    return int(m.group(1)) * 1_000_000 + int((m.group(2) or "").ljust(6, "0"))


def cmd_rates(args: argparse.Namespace) -> int:
    """`switchctl rates import|export|show|rate`: the site's rate tables in its store."""
    from .billing.ratecsv import RateCsvError
    from .billing.ratestore import RateStore, RateStoreError, describe_versions
    from .billing.rating import NoRate
    from .store import Store, StoreError

    site = _load_site(args.config)

    async def go() -> int:
        store = Store.open(site.database_url)
        try:
            await store.create_all()
            rates = RateStore(store, _wall_clock_us)
            if args.rates_command == "import":
                v = await rates.import_csv(args.file, args.tenant, args.account_class, args.timezone,
                                           replace=not args.merge)
                print(f"imported {args.file} as rate table ({v.tenant}, {v.account_class}) version "
                      f"{v.version} ({v.mode}): {v.rows} rows, {v.prefixes} prefixes, "
                      f"{v.currency.code}, {v.timezone}; now current")
            elif args.rates_command == "export":
                out = args.output if args.output and args.output != "-" else sys.stdout
                await rates.export_csv(args.tenant, args.account_class, out, version=args.version)
                if out is not sys.stdout:
                    print(f"wrote {args.output}", file=sys.stderr)
            elif args.rates_command == "show":
                grouped = describe_versions(await rates.versions())
                if not grouped:
                    print("no rate tables (import one: switchctl rates import FILE --class C)")
                for (tenant, account_class), versions in grouped.items():
                    print(f"({tenant}, {account_class})")
                    for v in versions:
                        mark = "*" if v.current else " "
                        print(f"  {mark} v{v.version:<4} {v.rows:>8} rows {v.prefixes:>8} prefixes  "
                              f"{v.currency.code} {v.timezone:<16} {v.mode:<7} "
                              f"{_stamp(v.created_at_us)}  {v.source}")
                if grouped:
                    print("(* = current)")
            elif args.rates_command == "rate":
                return await _rate_one(args, rates)
            return 0
        except (RateCsvError, RateStoreError, NoRate, StoreError, ValueError) as exc:
            print(f"rates {args.rates_command}: {exc}" if not isinstance(exc, RateCsvError) else str(exc),
                  file=sys.stderr)
            return 1
        finally:
            await store.close()

    return aio.run(go())


def _stamp(at_us: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(at_us // 1_000_000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


async def _rate_one(args: argparse.Namespace, rates) -> int:
    """`rates rate NUMBER`: the row that rates it and the cost of --seconds."""
    import datetime as dt

    book = await rates.load()
    at_us = _wall_clock_us()
    if args.at:
        try:
            when = dt.datetime.fromisoformat(args.at)
        except ValueError:
            raise ValueError(f"--at '{args.at}' is not a date and time like 2026-03-01T14:30") from None
        if when.tzinfo is None:
            when = when.astimezone()  # the host's local time
        at_us = int(when.timestamp()) * 1_000_000
    row = book.rate(args.number, at_us=at_us, tenant=args.tenant, account_class=args.account_class)
    rate = row.rate
    code = rate.currency.code
    print(f"{args.number}: prefix {row.prefix}" + (f" ({row.description})" if row.description else "")
          + f" from table ({row.tenant}, {row.account_class})"
          + (f", time band '{row.band.spec}'" if row.band else ""))
    print(f"  {rate.per_minute.format()} {code}/min, connect fee {rate.connect_fee.format()}, "
          f"blocks {rate.initial_s}/{rate.increment_s} s, minimum {rate.minimum_s} s, rounding {rate.rounding.value}")
    duration = _seconds_to_us(args.seconds)
    billed = rate.billed_us(duration)
    print(f"  {args.seconds} s answered: billed {billed // 1_000_000} s, costs {rate.cost(duration).format()} {code}")
    return 0


def cmd_booth(args: argparse.Namespace) -> int:
    """`switchctl booth open|bill|collect|list`: phone-bar booth sessions."""
    from .billing.accounts import AccountError, Accounts
    from .billing.booths import BoothError, Booths, booth_extensions
    from .billing.ledger import Ledger, LedgerError
    from .billing.money import CurrencyMismatch, Money, currency
    from .store import Store, StoreError

    site = _load_site(args.config)

    async def go() -> int:
        store = Store.open(site.database_url)
        try:
            await store.create_all()
            ledger = Ledger(store, _wall_clock_us)
            accounts = Accounts(store, _wall_clock_us)
            booths = Booths(store, ledger, accounts, booths=booth_extensions(site.phones),
                            tenant=args.tenant, currency_=currency(getattr(args, "currency", "EUR")),
                            clock=_wall_clock_us)

            async def amount(text: str | None) -> Money | None:
                if text is None:
                    return None
                account = await accounts.find(args.booth, tenant=args.tenant)
                return Money.parse(text, account.currency if account else booths.currency)

            command = args.booth_command
            if command == "open":
                bill = await booths.open(args.booth, deposit=await amount(args.deposit))
                deposit = f", deposit {bill.credited.format()} {bill.currency.code}" if bill.credits else ""
                print(f"booth {args.booth}: session open{deposit}")
            elif command == "bill":
                print((await booths.bill(args.booth)).text(), end="")
            elif command == "collect":
                done = await booths.collect(args.booth, await amount(args.paid))
                print(done.bill.text(), end="")
                code = done.bill.currency.code
                if done.paid:
                    print(f"collected {done.paid.format()} {code}; booth {args.booth} is free")
                elif done.returned:
                    print(f"give back {done.returned.format()} {code}; booth {args.booth} is free")
                else:
                    print(f"nothing due; booth {args.booth} is free")
            elif command == "list":
                bills = await booths.list()
                if not bills:
                    print("no open booth sessions")
                for bill in bills:
                    code = bill.currency.code
                    live = f", {len(bill.live_calls)} call(s) in progress" if bill.live_calls else ""
                    print(f"{bill.booth:<8} since {_stamp(bill.opened_at_us) if bill.opened_at_us else '?'}  "
                          f"{len(bill.lines):>3} call(s)  total {bill.total.format():>9} {code}  "
                          f"due {bill.due.format():>9} {code}{live}")
            return 0
        except (BoothError, AccountError, LedgerError, CurrencyMismatch, StoreError, ValueError) as exc:
            print(f"booth {args.booth_command}: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    return aio.run(go())


def cmd_voicemail(args: argparse.Namespace) -> int:
    """`switchctl voicemail create|list`: mailboxes and their messages in the site's store."""
    from .features.voicemail import Mailboxes, VoicemailError
    from .store import Store, StoreError

    site = _load_site(args.config)
    tenant = args.tenant or site.billing.tenant  # the tenant the controller files messages under

    async def go() -> int:
        store = Store.open(site.database_url)
        try:
            await store.create_all()
            mailboxes = Mailboxes(store, _wall_clock_us, tenant=tenant)
            if args.voicemail_command == "create":
                box = await mailboxes.create(args.number, args.pin, email=args.email, greeting=args.greeting)
                print(f"created mailbox {box.number} (tenant {box.tenant})"
                      + (f", e-mail to {box.email}" if box.email else ", no e-mail"))
                return 0
            box = await mailboxes.get(args.number)
            if box is None:
                raise VoicemailError(f"no mailbox '{args.number}' (tenant '{tenant}')")
            states = ("new", "saved", "deleted") if args.all else ("new", "saved")
            messages = await mailboxes.messages(args.number, states=states)
            counts = await mailboxes.counts(args.number)
            locked = ""
            if box.locked_until_us is not None and box.locked_until_us > _wall_clock_us():
                locked = f", PIN locked until {_stamp(box.locked_until_us)}"
            print(f"mailbox {box.number}: {counts.get('new', 0)} new, {counts.get('saved', 0)} saved; "
                  f"e-mail {box.email or 'none'}{locked}")
            for m in messages:
                mail = {"sent": "mailed", "none": "-", "pending": f"mail pending ({m.mail_attempts} tries"
                        + (f", last: {m.mail_error}" if m.mail_error else "") + ")"}[m.mail_state]
                who = f"{m.caller_name} <{m.caller}>" if m.caller_name else m.caller
                print(f"  {m.id:>5}  {m.state:<7} {_stamp(m.received_at_us)}  {m.duration_us // 1_000_000:>4} s  "
                      f"{who}  {mail}")
            return 0
        except (VoicemailError, StoreError) as exc:
            print(f"voicemail {args.voicemail_command}: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    return aio.run(go())


def cmd_run(args: argparse.Namespace) -> int:
    from .controller import Controller

    site = _load_site(args.config)
    flows, errors = _check(site, quiet=True)
    if errors:
        print("refusing to start: the flows have errors (run switchctl check)", file=sys.stderr)
        return 1

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sim = None
        if args.simulator:
            from .flowtest import simulator_for_site

            sim = simulator_for_site(site, flows, media_speed=args.sim_media_speed)
            await sim.start()
            log.info("FreeSWITCH simulator started", extra={"esl_port": sim.esl_port})
        from .store import Store

        store = Store.open(site.database_url)
        controller = Controller(site, flows, store=store)
        await controller.start()
        log.info("controller running", extra={"site": site.name, "flows": len(flows)})
        if sim is not None:
            print(
                "switchctl is running against the FreeSWITCH simulator. Place a call from another shell:\n"
                f"  make call-fs-sim      (or: switchctl call -c {args.config} 9000 --press 1 --press 9)\n"
                "Stop with Ctrl-C.",
                flush=True,
            )
        await stop.wait()
        log.info("stopping: waiting for live calls")
        await controller.stop(grace=args.grace)
        await store.close()
        if sim is not None:
            await sim.close()
        log.info("stopped", extra={"calls": controller.stats.calls_finished})
        return 0

    return aio.run(go())


def cmd_flow_test(args: argparse.Namespace) -> int:
    from .flowtest import run_flow_test

    site = _load_site(args.config)
    flows, errors = _check(site, quiet=True)
    if errors:
        print("the flows have errors (run switchctl check)", file=sys.stderr)
        return 1
    report = aio.run(
        run_flow_test(site, flows, flow=args.flow, dial=args.dial, presses=args.press,
                      caller=args.caller, hangup_after=args.hangup_after)
    )
    print(report.text())
    return 0 if report.ok else 1


def _add_rates_parser(sub, with_site) -> None:
    rates = sub.add_parser("rates", help="rate tables in the store (CSV import/export)")
    rsub = rates.add_subparsers(dest="rates_command", required=True)

    def table_args(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--class", dest="account_class", required=True,
                        help="account class of the table ('default' for the fallback table)")
        sp.add_argument("--tenant", default="default")
        sp.set_defaults(func=cmd_rates)
        return sp

    sp = table_args(with_site(rsub.add_parser("import", help="import a rate CSV as the table's new version")))
    sp.add_argument("file", help="rate CSV (docs/RATING.md); checked whole before anything is written")
    sp.add_argument("--timezone", help="IANA timezone of the table's time bands (default: the file's, or UTC)")
    sp.add_argument("--merge", action="store_true",
                    help="keep the current version's other prefixes (default: the file replaces the table)")
    sp = table_args(with_site(rsub.add_parser("export", help="write a table as canonical CSV")))
    sp.add_argument("-o", "--output", help="file to write (default: standard output)")
    sp.add_argument("--version", type=int, help="a stored version (default: the current one)")
    sp = table_args(with_site(rsub.add_parser("rate", help="which rate a number gets and what N seconds cost")))
    sp.add_argument("number", help="destination digits, optional leading +")
    sp.add_argument("--seconds", default="60", help="answered duration to price (default 60)")
    sp.add_argument("--at", help="call time, ISO like 2026-03-01T14:30 (default now; time bands use it)")
    sp = with_site(rsub.add_parser("show", help="tables, versions and row counts"))
    sp.set_defaults(func=cmd_rates)


def _add_booth_parser(sub, with_site) -> None:
    booth = sub.add_parser("booth", help="phone-bar booth sessions: bill and collect")
    bsub = booth.add_subparsers(dest="booth_command", required=True)

    def booth_args(sp: argparse.ArgumentParser, *, named: bool = True) -> argparse.ArgumentParser:
        if named:
            sp.add_argument("booth", help="the booth phone's extension")
        sp.add_argument("--tenant", default="default")
        sp.set_defaults(func=cmd_booth)
        return sp

    sp = booth_args(with_site(bsub.add_parser("open", help="open a session (optional: a deposit)")))
    sp.add_argument("--deposit", help="money the customer leaves, e.g. 10.00 (what is left goes back)")
    sp.add_argument("--currency", default="EUR", help="currency of the booth's account if it is created now")
    booth_args(with_site(bsub.add_parser("bill", help="the open session's bill (or the last one)")))
    sp = booth_args(with_site(bsub.add_parser("collect", help="settle and close the session")))
    sp.add_argument("--paid", help="amount handed over; must be the amount due (default: the amount due)")
    booth_args(with_site(bsub.add_parser("list", help="open sessions with running totals")), named=False)


def cmd_recordings(args: argparse.Namespace) -> int:
    """`switchctl recordings list`: kept call recordings (docs/RECORDING.md), newest first."""
    from .store import Store, StoreError
    from .store.recording_models import RecordingLog

    site = _load_site(args.config)

    async def go() -> int:
        store = Store.open(site.database_url)
        try:
            await store.create_all()
            rows = await RecordingLog(store, _wall_clock_us).list(call_uuid=args.call, limit=args.limit)
            for r in rows:
                ended = _stamp(r.ended_us) if r.ended_us is not None else "running"
                paused = f", paused {r.paused_us / 1_000_000:.1f} s" if r.paused_us else ""
                print(f"{r.switch}  {r.call_uuid}  {_stamp(r.started_us)} .. {ended}  {r.state}"
                      f"{paused}  ({r.source})  {r.path}")
            if not rows:
                print("no recordings" + (f" of call {args.call}" if args.call else ""))
            return 0
        except StoreError as exc:
            print(f"recordings list: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    return aio.run(go())


def _add_recordings_parser(sub, with_site) -> None:
    recordings = sub.add_parser("recordings", help="call recordings kept with the calls")
    rsub = recordings.add_subparsers(dest="recordings_command", required=True)
    sp = with_site(rsub.add_parser("list", help="recordings, newest first"))
    sp.add_argument("--call", help="only this call's (its uuid, as in its CDR)")
    sp.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sp.set_defaults(func=cmd_recordings)


def _add_voicemail_parser(sub, with_site) -> None:
    voicemail = sub.add_parser("voicemail", help="voicemail boxes and messages")
    vsub = voicemail.add_subparsers(dest="voicemail_command", required=True)

    def box_args(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("number", help="the mailbox number (usually the phone's extension)")
        sp.add_argument("--tenant", help="default: the site's billing tenant")
        sp.set_defaults(func=cmd_voicemail)
        return sp

    sp = box_args(with_site(vsub.add_parser("create", help="create a mailbox")))
    sp.add_argument("--pin", required=True, help="the PIN for listening to messages (stored hashed)")
    sp.add_argument("--email", help="new messages are e-mailed here with the recording attached")
    sp.add_argument("--greeting", help="a sound file the switch plays instead of the standard announcement")
    sp = box_args(with_site(vsub.add_parser("list", help="the mailbox's messages")))
    sp.add_argument("--all", action="store_true", help="also deleted messages")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchctl", description="Control layer for FreeSWITCH and Asterisk")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True)

    def with_site(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("-c", "--config", default=DEFAULT_SITE, help="site.yaml (default: ./site.yaml)")
        return sp

    sp = with_site(sub.add_parser("run", help="run the controller"))
    sp.add_argument("--simulator", action="store_true", help="start the FreeSWITCH simulator as the site's switch")
    sp.add_argument("--sim-media-speed", type=float, default=1.0,
                    help="with --simulator: play media and read timeouts N times faster (tests)")
    sp.add_argument("--grace", type=float, default=10.0, help="seconds live calls get on SIGTERM")
    sp.set_defaults(func=cmd_run)

    sp = with_site(sub.add_parser("check", help="validate the site and its call flows"))
    sp.set_defaults(func=cmd_check)

    sp = with_site(sub.add_parser("render", help="render a switch's configuration (FreeSWITCH or Asterisk)"))
    sp.add_argument("--out", required=True, help="output folder")
    sp.add_argument("--switch", help="which switch of the site (default: the only one)")
    sp.add_argument("--prune", action="store_true",
                    help="also delete files in --out that the render no longer produces")
    sp.set_defaults(func=cmd_render)

    sp = with_site(sub.add_parser("deploy", help="install the rendered configuration and reload the switch"))
    sp.add_argument("--conf-dir", help="the switch's configuration folder (default: the site's conf_dir)")
    sp.add_argument("--switch", help="which switch of the site (default: the first FreeSWITCH)")
    sp.add_argument("--force", action="store_true", help="reload even when nothing changed")
    sp.set_defaults(func=cmd_deploy)

    sp = with_site(sub.add_parser("status", help="is each switch up (api status over ESL)"))
    sp.add_argument("--switch", help="only this switch")
    sp.set_defaults(func=cmd_status)

    sp = with_site(sub.add_parser("calls", help="live calls on each switch"))
    sp.add_argument("--switch", help="only this switch")
    sp.set_defaults(func=cmd_calls)

    sp = with_site(sub.add_parser("call", help="place a call on the site's switch and print what it ran"))
    sp.add_argument("number", help="destination, e.g. 9000")
    sp.add_argument("--press", action="append", default=[],
                    help="digits at the next prompt that collects digits; '-' presses nothing; 'hangup'")
    sp.add_argument("--caller", default="1001")
    sp.add_argument("--switch", help="which switch of the site (default: the first FreeSWITCH)")
    sp.add_argument("--timeout", type=float, default=60.0)
    sp.set_defaults(func=cmd_call)

    sp = with_site(sub.add_parser("sipcall", help="a real SIP call with sipp to the site's Asterisk"))
    sp.add_argument("number", help="destination, e.g. 9000")
    sp.add_argument("--press", action="append", default=[],
                    help="digits pressed 3 s after answer, the next --press 3 s later, ...; "
                         "'-' presses nothing; 'hangup' hangs up then")
    sp.add_argument("--caller", default="1001")
    sp.add_argument("--switch", help="which switch of the site (default: the first Asterisk)")
    sp.add_argument("--timeout", type=float, default=60.0,
                    help="hang up this many seconds after the answer if the switch has not")
    sp.set_defaults(func=cmd_sipcall)

    account = sub.add_parser("account", help="prepaid accounts")
    asub = account.add_subparsers(dest="account_command", required=True)
    sp = with_site(asub.add_parser("create", help="create an account"))
    sp.add_argument("name")
    sp.add_argument("--kind", default="customer", choices=["booth", "card", "customer"])
    sp.add_argument("--currency", default="EUR")
    sp.add_argument("--tenant", default="default")
    sp.add_argument("--class", dest="account_class", default="default")
    sp.add_argument("--pin", help="calling cards: the PIN (stored hashed)")
    sp.set_defaults(func=cmd_account)
    sp = with_site(asub.add_parser("topup", help="add money to an account"))
    sp.add_argument("name")
    sp.add_argument("amount", help="exact decimal in the account's currency, e.g. 10.50")
    sp.add_argument("--key", help="idempotency key: the same key never tops up twice (default: a new one)")
    sp.add_argument("--note")
    sp.add_argument("--tenant", default="default")
    sp.set_defaults(func=cmd_account)
    sp = with_site(asub.add_parser("show", help="balance, live reservations and recent entries"))
    sp.add_argument("name")
    sp.add_argument("--tenant", default="default")
    sp.set_defaults(func=cmd_account)

    _add_rates_parser(sub, with_site)
    _add_booth_parser(sub, with_site)
    _add_voicemail_parser(sub, with_site)
    _add_recordings_parser(sub, with_site)

    flow = sub.add_parser("flow", help="call-flow tools")
    fsub = flow.add_subparsers(dest="flow_command", required=True)
    sp = with_site(fsub.add_parser("test", help="run a flow on the simulator and print the path taken"))
    sp.add_argument("flow", nargs="?", help="flow name (default: the flow answering --dial)")
    sp.add_argument("--dial", help="destination number (default: the flow's first number)")
    sp.add_argument("--press", action="append", default=[],
                    help="digits pressed at the next prompt that collects digits; '-' presses nothing; repeatable")
    sp.add_argument("--caller", default="1001", help="caller number")
    sp.add_argument("--hangup-after", type=float, help="caller hangs up N seconds after answer")
    sp.set_defaults(func=cmd_flow_test)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    from .render.freeswitch import RenderError

    try:
        return args.func(args)
    except (SourceError, RenderError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # `switchctl calls | head`
            sys.stderr.close()
            return 0
        # a port already taken, a conf_dir we may not write: say it, no traceback
        print(f"switchctl {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
