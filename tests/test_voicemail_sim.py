"""Voicemail end to end through the controller on the FreeSWITCH simulator: a caller leaves a message
(answer -> greeting -> record; the caller hangs up while talking), the message is kept and e-mailed
with its WAV through a real aiosmtpd server on 127.0.0.1 — the site's `voicemail:` section wired by
`Controller` (tests/sites/voicemail)."""

from __future__ import annotations

import asyncio
import dataclasses
import email
from pathlib import Path

from aiosmtpd.smtp import SMTP as SmtpServer

from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.features.voicemail import Mailboxes
from switchctl.features.prepaid.cutoff import wall_us
from switchctl.flowtest import sim_routes
from switchctl.sim import FreeSwitchSim, SimConfig
from switchctl.sitecheck import check_site
from switchctl.store.database import Store

SITE = Path(__file__).resolve().parent / "sites" / "voicemail" / "site.yaml"


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        self.envelopes.append(envelope)
        self.arrived.set()
        return "250 Message accepted for delivery"


async def test_a_message_left_on_the_simulator_is_kept_and_emailed(tmp_path: Path) -> None:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SmtpServer(inbox, hostname="mx.test"), "127.0.0.1", 0)
    smtp_port = smtp.sockets[0].getsockname()[1]
    spool = tmp_path / "spool"
    spool.mkdir()

    site = load_site(SITE)
    checked = check_site(site)
    assert checked.ok, checked.report()
    [fs1] = site.switches
    fs1 = dataclasses.replace(fs1, outbound=dataclasses.replace(fs1.outbound, port=0))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'vm.db'}"
    assert site.voicemail is not None
    site = dataclasses.replace(site, switches=(fs1,), database_url=db_url, web_listen=("127.0.0.1", 0),
                               voicemail=dataclasses.replace(site.voicemail, spool=spool,
                                                             smtp=f"127.0.0.1:{smtp_port}"))
    store = Store.open(db_url)
    controller = Controller(site, checked.flows, store=store)
    await controller.start(connect_inbound=False)
    mailboxes = Mailboxes(store, wall_us, tenant=site.billing.tenant)
    await mailboxes.create("1002", "4321", email="desk2@bar.example")
    sim = FreeSwitchSim(SimConfig(dialplan=sim_routes(site, checked.flows,
                                                      f"127.0.0.1:{controller.servers['fs1'].port}"),
                                  media_speed=1.0))
    await sim.start()
    try:
        # the stock greeting (4 prompts + the number's digits, 1 s each on the simulator), the beep,
        # then the caller talks 2 s (the simulator's default speech) and the silence ends the recording
        placed = sim.place_call("81002", "1001", hangup_after=30.0)
        await asyncio.wait_for(placed.done, 30)
        await asyncio.wait_for(inbox.arrived.wait(), 20)
        messages = await mailboxes.messages("1002")
        assert len(messages) == 1 and messages[0].caller == "1001" and messages[0].duration_us >= 1_000_000
        wav = Path(messages[0].path)
        assert wav.parent == spool and wav.exists()
        [envelope] = inbox.envelopes
        assert envelope.rcpt_tos == ["desk2@bar.example"] and envelope.mail_from == "voicemail@bar.example"
        mail = email.message_from_bytes(envelope.content)
        [attachment] = [part for part in mail.walk() if part.get_content_disposition() == "attachment"]
        assert attachment.get_payload(decode=True) == wav.read_bytes()
        assert not sim.channels
    finally:
        await sim.close()
        await controller.stop(grace=2)
        await store.close()
        smtp.close()
        await smtp.wait_closed()
