"""Call recording end to end through the Controller on the FreeSWITCH simulator: a flow starts
recording and dials; a console pauses and resumes it over the web API while the call talks; the
simulator writes the file into the dated folder, the store keeps the row, and the channel's
json_cdr carries `switchctl_recording`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
from pathlib import Path
from urllib.parse import unquote

import aiohttp

from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.flowtest import sim_routes
from switchctl.sim import FreeSwitchSim, SimConfig
from switchctl.sim.config import UserBehaviour
from switchctl.sitecheck import check_site
from switchctl.store.database import Store
from switchctl.store.recording_models import RecordingLog

FLOW = """\
flow: recorded
numbers: ["7000"]
nodes:
  answer: {type: answer, next: rec}
  rec: {type: record_call, action: start, next: talk}
  talk: {type: dial, to: [{phone: "1002"}], next: bye, failed: bye}
  bye: {type: hangup}
"""


def write_site(tmp: Path) -> Path:
    (tmp / "dialplans").mkdir()
    (tmp / "dialplans" / "recorded.yaml").write_text(FLOW)
    site = tmp / "site.yaml"
    site.write_text(textwrap.dedent(f"""\
        site: rec
        switches:
          - name: fs1
            esl: {{host: 127.0.0.1, port: 29121, password: ClueCon}}
            outbound: {{host: 127.0.0.1, port: 29184}}
            sip: {{ip: 127.0.0.1, port: 26160}}
            cdr: {{format: json, path: {tmp / 'json_cdr'}}}
        database: sqlite+aiosqlite:///{tmp / 'rec.db'}
        web: {{listen: "127.0.0.1:29180"}}
        flows: dialplans/
        phones:
          - {{range: "1001-1002", name: "Desk {{n}}", password: "desk-{{extension}}"}}
        recordings: {{dir: {tmp / 'rec'}, local_dir: {tmp / 'rec'}}}
        """))
    return site


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_flow_records_and_a_console_pauses_it(tmp_path: Path) -> None:
    (tmp_path / "json_cdr").mkdir()
    (tmp_path / "rec").mkdir()
    site = load_site(write_site(tmp_path))
    checked = check_site(site)
    assert checked.ok, checked.report()
    [fs1] = site.switches  # free ports for the outbound socket and the API
    fs1 = dataclasses.replace(fs1, outbound=dataclasses.replace(fs1.outbound, port=0))
    site = dataclasses.replace(site, switches=(fs1,), web_listen=("127.0.0.1", 0))
    store = Store.open(site.database_url)
    controller = Controller(site, checked.flows, store=store)
    await controller.start(connect_inbound=False)
    recorder = controller.recorder
    assert recorder is not None and controller.web is not None
    sim = FreeSwitchSim(SimConfig(
        dialplan=sim_routes(site, checked.flows, f"127.0.0.1:{controller.servers['fs1'].port}"),
        users={"1002": UserBehaviour(answer_after=0.2, hangup_after=2.0)},
        cdr_dir=tmp_path / "json_cdr", media_speed=1.0))
    await sim.start()
    try:
        placed = sim.place_call("7000", "1001", hangup_after=30.0)
        await wait_for(lambda: any(s and s["state"] == "recording" for s in map(recorder.status, list(recorder._calls))))
        [uuid] = list(recorder._calls)
        await wait_for(lambda: len(sim.channels) == 2)  # the dial answered: the call talks
        url = f"{controller.web.url}/api/calls/{uuid}/recording"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"action": "pause"}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["state"] == "paused"
            async with http.post(url, json={"action": "pause"}) as resp:
                assert resp.status == 409 and "paused" in (await resp.json())["error"]
            async with http.post(f"{controller.web.url}/api/calls/nope/recording", json={"action": "stop"}) as resp:
                assert resp.status == 404
            async with http.post(url, json={"action": "rewind"}) as resp:
                assert resp.status == 400
            await asyncio.sleep(0.4)
            async with http.post(url, json={"action": "resume"}) as resp:
                assert resp.status == 200 and (await resp.json())["state"] == "recording"
            result = await asyncio.wait_for(placed.done, 15)
            assert result.answered
            await wait_for(lambda: recorder.status(uuid) is None)
            async with http.get(f"{controller.web.url}/api/recordings", params={"call": uuid}) as resp:
                assert resp.status == 200
                [listed] = (await resp.json())["recordings"]
        path = Path(listed["path"])
        assert path.parent.parent.parent.parent == tmp_path / "rec"  # <dir>/<yyyy>/<mm>/<dd>/
        assert path.name == f"{uuid}.wav" and path.is_file() and path.stat().st_size > 44
        assert listed["state"] == "stopped" and listed["ended_by"] in ("hangup", "cdr")
        assert listed["paused_us"] >= 300_000
        [row] = await RecordingLog(store, lambda: 0).list(call_uuid=uuid)
        assert row.path == str(path) and row.source == "live"
        # the switch's own CDR of the caller's leg names the file
        await wait_for(lambda: any((tmp_path / "json_cdr").rglob(f"*{uuid}*.cdr.json")))
        [cdr_file] = (tmp_path / "json_cdr").rglob(f"*{uuid}*.cdr.json")
        variables = json.loads(cdr_file.read_text())["variables"]
        assert unquote(variables["switchctl_recording"]) == str(path)
    finally:
        await sim.close()
        await controller.stop(grace=2)
        await store.close()
