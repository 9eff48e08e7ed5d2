"""The controller process: serves every switch's outbound socket and holds one inbound connection per switch.

Asterisk switches have no outbound socket: one ARI event stream per Asterisk delivers StasisStart,
and each call's flow runs in its own task (switch/asterisk.py), with the same stats and traces.

One task per call (the outbound session's handler) runs that call's flow, so a slow or failing call
never delays another, and the socket readers below never wait for a handler. A lost switch is
retried by its InboundClient with backoff and a bounded number of log lines; calls on the other
switches go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .ari import AriClient
from .config.site import Site, SwitchConfig, VoicemailConfig
from .esl.errors import ESLError
from .esl.inbound import InboundClient
from .esl.outbound import OutboundServer, OutboundSession
from .events import EventBus
from .features.ivr import IvrFeature
from .features.prepaid.cutoff import wall_us
from .features.prepaid.wiring import PrepaidWiring
from .features.recording import CallRecorder
from .features.voicemail import Mailboxes, MailSettings, Voicemail
from .flows import FlowRunner, FlowSet, FlowTrace
from .store.database import Store
from .store.recording_models import RecordingLog
from .switch.asterisk import AsteriskCall, AsteriskSwitch, site_sound_uri
from .switch.asterisk_media import RECORDING_DIR
from .switch.call import Call, Switch
from .switch.freeswitch import (
    CALL_EVENTS,
    FreeSwitchCall,
    FreeSwitchSwitch,
    call_info_from_channel_data,
)
from .web import WebApi

if TYPE_CHECKING:
    from .features.transfer.service import TransferService

log = logging.getLogger("switchctl.controller")
READOPT_POLL_S = 0.1  # how often a new inbound connection is looked for (re-adoption of live calls)


@dataclass
class ControllerStats:
    calls_started: int = 0
    calls_finished: int = 0
    calls_failed: int = 0
    active: int = 0
    esl_bytes_in: int = 0
    esl_bytes_out: int = 0
    traces: list[FlowTrace] = field(default_factory=list)


class Controller:
    def __init__(
        self,
        site: Site,
        flows: FlowSet,
        *,
        keep_traces: bool = False,
        on_trace: Callable[[str, FlowTrace | None], None] | None = None,
        store: Store | None = None,
        web: bool | None = None,
    ) -> None:
        self.site = site
        # With a store, prepaid billing runs: `prepaid` nodes authorize, cutoffs, CDR collection.
        self.store = store
        self.billing: PrepaidWiring | None = None
        # The HTTP API on the site's `web: listen:` (loopback unless allow_remote). `web` None: it
        # starts when it has something to serve (billing, transfers) or the site names `web:`.
        self.web: WebApi | None = None
        self._want_web = web
        self.flows = flows
        # Live switch objects by site name, filled as each switch starts; features get this very
        # dict, so a switch that connects later is still found.
        self.switches: dict[str, Switch] = {}
        self.events = EventBus()  # what consoles watch live (GET /api/events)
        self.transfers = self._transfer_service(site, flows)
        # Call recording when the site has a `recordings:` section: `record_call` nodes and the
        # recording API; the paths are kept in the store once `start` has one.
        self.recorder = self._recorder(site)
        self.runner = FlowRunner(flows, site_values=dict(site.values), lists=dict(site.lists),
                                 sound_dirs=site.sound_dirs, numbering=site.numbering,
                                 transfers=self.transfers, recordings=self.recorder)
        self.ivr = IvrFeature(flows, self.runner)
        self.stats = ControllerStats()
        self.keep_traces = keep_traces
        self.on_trace = on_trace
        self.servers: dict[str, OutboundServer] = {}
        self.clients: dict[str, InboundClient] = {}
        self.asterisks: dict[str, AsteriskSwitch] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, connect_inbound: bool = True) -> None:
        if self.store is not None:
            # Billing first: calls that ended while no controller was up are billed from the
            # switches' CDRs before a new call is authorized against the same accounts.
            self.billing = await PrepaidWiring.start(self.site, self.store)
            self.runner.billing = self.billing.prepaid
            self._tasks.append(asyncio.create_task(self.billing.run(self._stop), name="cdr-collector"))
            if self.site.voicemail is not None:
                self._start_voicemail(self.store, self.site.voicemail)
            if self.recorder is not None:
                self.recorder.log = RecordingLog(self.store, wall_us)
        want_web = self._want_web
        if want_web is None:
            want_web = (self.billing is not None or self.transfers is not None or self.recorder is not None
                        or self.site.web_configured)
        if want_web:
            await self._start_web()
        for sw in self.site.switches:
            if sw.kind == "asterisk" and sw.ari is not None:
                self._start_asterisk(sw)
                continue
            if sw.kind != "freeswitch":
                log.warning("switch kind not supported yet; skipped", extra={"switch": sw.name, "kind": sw.kind})
                continue
            server = OutboundServer(self._handler_for(sw), host=sw.outbound.host, port=sw.outbound.port)
            await server.start()
            self.servers[sw.name] = server
            log.info(
                "serving outbound socket",
                extra={"switch": sw.name, "listen": f"{sw.outbound.host}:{server.port}"},
            )
            if connect_inbound:
                client = InboundClient(
                    sw.esl.host, sw.esl.port, sw.esl.password, name=sw.name,
                    events=("BACKGROUND_JOB", "RELOADXML"),
                )
                self.clients[sw.name] = client
                fs_switch = FreeSwitchSwitch(sw.name, client)
                # Targets a feature originates (a transfer's) are phones of the site's directory
                # domain, like a flow's dial (which reads it from the caller's channel).
                fs_switch.domain = sw.domain
                self.switches[sw.name] = fs_switch
                self._tasks.append(asyncio.create_task(client.run(self._stop), name=f"inbound-{sw.name}"))
                if self.billing is not None:
                    self._tasks.append(asyncio.create_task(self._readopt_on_connect(fs_switch, client),
                                                           name=f"readopt-{sw.name}"))

    def _transfer_service(self, site: Site, flows: FlowSet) -> TransferService | None:
        """The transfer feature when the site has a `transfer:` section: unpaid dials run through
        it (feature codes) and the web API's conversation routes drive it."""
        if site.transfer is None:
            return None
        # Loaded only for sites that use it.
        from .features.transfer.service import TransferService

        return TransferService(self.switches, site.transfer, events=self.events,
                               flows=tuple(flow.name for flow in flows))

    @staticmethod
    def _recorder(site: Site) -> CallRecorder | None:
        cfg = site.recordings
        if cfg is None:
            return None
        return CallRecorder(
            None, directory=str(cfg.dir), local_directory=str(cfg.local_dir) if cfg.local_dir else None,
            fmt=cfg.format, timezone=site.values.get("timezone") or "UTC", clock=wall_us,
            cdr_variable_switches={sw.name for sw in site.switches if sw.kind == "asterisk"})

    @contextlib.asynccontextmanager
    async def _tracking(self, call: Call) -> AsyncIterator[None]:
        """The call is reachable by uuid for the recording API while its flow runs."""
        if self.recorder is None:
            yield
            return
        async with self.recorder.tracking(call):
            yield

    def _start_voicemail(self, store: Store, cfg: VoicemailConfig) -> None:
        """`voicemail` / `voicemail_check` nodes get their service; new messages are e-mailed by a
        loop that retries what the relay refused (the message rows are the outbox)."""
        mailboxes = Mailboxes(store, wall_us, tenant=self.site.billing.tenant)
        mail = (MailSettings.parse(cfg.smtp, cfg.sender, retry_seconds=cfg.retry_seconds)
                if cfg.smtp else None)
        voicemail = Voicemail(mailboxes, spool_dir=str(cfg.spool),
                              local_spool_dir=str(cfg.local_spool) if cfg.local_spool else None, mail=mail)
        self.runner.voicemail = voicemail
        self._tasks.append(asyncio.create_task(voicemail.run(self._stop), name="voicemail-mailer"))
        log.info("voicemail ready", extra={"spool": str(cfg.spool), "smtp": cfg.smtp or "(no e-mail)"})

    async def _start_web(self) -> None:
        # A busy port costs the operator the read-only API, not the calls: logged, and we go on.
        web_api = WebApi(self)
        host, port = self.site.web_listen
        try:
            await web_api.start(host, port)
        except OSError as exc:
            log.error("web API not started: cannot listen on %s:%s: %s", host, port, exc)
            return
        self.web = web_api
        log.info("web API listening", extra={"url": web_api.url})

    def _start_asterisk(self, sw: SwitchConfig) -> None:
        assert sw.ari is not None
        client = AriClient(sw.ari.url, sw.ari.user, sw.ari.password, sw.ari.app)
        recording_dir = str(sw.recording_dir or RECORDING_DIR)
        switch = AsteriskSwitch(
            sw.name, client,
            sound_uri=site_sound_uri(self.site.name, [str(d) for d in self.site.sound_dirs],
                                     recording_dir=recording_dir),
            on_call=lambda call, name=sw.name: self.handle_asterisk_call(call, name),
        )
        switch.recording_dir = recording_dir  # where Asterisk records: voicemail and recordings live under it
        switch.start()  # connects (and reconnects) in the background
        self.asterisks[sw.name] = switch
        self.switches[sw.name] = switch
        if self.billing is not None:
            self._tasks.append(asyncio.create_task(self._readopt_asterisk(switch), name=f"readopt-{sw.name}"))
        log.info("taking calls from Stasis app", extra={"switch": sw.name, "ari": sw.ari.url, "app": sw.ari.app})

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls, let live calls finish for `grace` seconds, then close everything."""
        self._stop.set()
        # Asterisk calls drain in parallel with the FreeSWITCH sockets: one grace for all.
        drains = [asyncio.create_task(sw.stop(grace)) for sw in self.asterisks.values()]
        for server in self.servers.values():
            await server.close(grace=grace)
        await asyncio.gather(*drains, return_exceptions=True)
        if self.transfers is not None:  # consultations whose caller left: their legs are hung up
            await self.transfers.close()
        for client in self.clients.values():
            await client.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.web is not None:  # up until here: it shows the calls draining
            await self.web.close()
            self.web = None
        if self.billing is not None:
            await self.billing.close()


    async def _readopt_on_connect(self, switch: FreeSwitchSwitch, client: InboundClient) -> None:
        """Prepaid calls a previous controller left talking (SIGKILL, crash) go back under the
        cutoff as soon as the inbound connection is up; again after each reconnect (calls already
        followed are skipped)."""
        seen = 0
        while not self._stop.is_set():
            if client.connected and client.connects != seen and self.billing is not None:
                seen = client.connects
                try:
                    await self.billing.readopt([switch])
                except Exception:  # the next connection tries again; the nets stay armed
                    log.exception("re-adopting live calls failed", extra={"switch": switch.name})
            await asyncio.sleep(READOPT_POLL_S)

    async def _readopt_asterisk(self, switch: AsteriskSwitch) -> None:
        """Prepaid calls a previous controller left talking on this Asterisk (their channels
        stayed in the Stasis app) go back under the cutoff once the event stream is up, so the
        hangups of the adopted channels are seen. Once: after a mere reconnect of this controller
        its own dials still run (and readopt skips calls already followed)."""
        while not self._stop.is_set():
            try:
                await switch.wait_connected(READOPT_POLL_S)
            except TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - the stream gave up (e.g. refused credentials)
                log.error("live calls not re-adopted: %s", exc, extra={"switch": switch.name})
                return
            if self.billing is None:
                return
            try:
                await self.billing.readopt([switch])
            except Exception:  # the nets armed before the restart stay; nothing else to do
                log.exception("re-adopting live calls failed", extra={"switch": switch.name})
            return

    async def run_until(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.stop()

    # -- calls -----------------------------------------------------------------------------------

    def _handler_for(self, sw: SwitchConfig):
        async def handle(session: OutboundSession) -> None:
            await self.handle_session(session, sw.name)

        return handle

    async def handle_session(self, session: OutboundSession, switch_name: str) -> None:
        self.stats.calls_started += 1
        self.stats.active += 1
        started = time.perf_counter()
        uuid = "?"
        trace: FlowTrace | None = None
        try:
            data = await session.connect()
            info = call_info_from_channel_data(data, switch_name)
            uuid = info.uuid
            await session.subscribe(CALL_EVENTS)
            await session.linger()
            call = FreeSwitchCall(session, info)
            async with self._tracking(call):
                trace = await self.ivr.on_call(call)
            if trace is not None and trace.result != "transferred" and call.hangup_cause is None:
                await call.hangup()
            if trace is not None and trace.result == "error":
                self.stats.calls_failed += 1
        except ESLError as exc:
            self.stats.calls_failed += 1
            log.warning("call lost on the event socket", extra={"call": uuid, "switch": switch_name, "error": str(exc)})
        finally:
            self.stats.esl_bytes_in += session.bytes_received
            self.stats.esl_bytes_out += session.bytes_sent
            self._finished(uuid, switch_name, trace, started)

    async def handle_asterisk_call(self, call: AsteriskCall, switch_name: str) -> None:
        """One call in our Stasis app: run its flow, then hang up unless the flow transferred it."""
        self.stats.calls_started += 1
        self.stats.active += 1
        started = time.perf_counter()
        trace: FlowTrace | None = None
        try:
            async with self._tracking(call):
                trace = await self.ivr.on_call(call)
            if trace is not None and trace.result != "transferred" and call.hangup_cause is None:
                await call.hangup()
            if trace is not None and trace.result == "error":
                self.stats.calls_failed += 1
        except Exception as exc:  # noqa: BLE001 - one call's failure must not reach the stream
            self.stats.calls_failed += 1
            log.warning("call failed on ARI", extra={"call": call.uuid, "switch": switch_name, "error": str(exc)})
            try:
                await call.hangup("NORMAL_TEMPORARY_FAILURE")
            except Exception as hangup_exc:  # noqa: BLE001 - already failing; record and go on
                log.debug("hangup after a failed call failed: %s", hangup_exc, extra={"call": call.uuid})
        finally:
            self._finished(call.uuid, switch_name, trace, started)

    def _finished(self, uuid: str, switch_name: str, trace: FlowTrace | None, started: float) -> None:
        """Account for one ended call, hand its trace on, and log it in one line (ops grep by call)."""
        self.stats.active -= 1
        self.stats.calls_finished += 1
        if self.keep_traces and trace is not None:
            self.stats.traces.append(trace)
        if self.on_trace is not None:
            self.on_trace(uuid, trace)
        if trace is not None and log.isEnabledFor(logging.INFO):
            log.info(
                "call ended",
                extra={
                    "call": uuid,
                    "switch": switch_name,
                    "result": trace.result,
                    "cause": trace.cause or "",
                    "path": ">".join(node for _flow, node, _outcome in trace.steps),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
