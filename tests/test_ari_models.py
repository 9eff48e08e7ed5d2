"""ARI event and resource models against every captured frame and body (captures/asterisk*)."""

from __future__ import annotations

import collections
import json
import re
from datetime import UTC

import pytest

from switchctl.ari import models as m
from switchctl.flows.parse import HANGUP_CAUSES
from tests.test_ari_fakeserver import ARI_CAPTURES, SCENARIOS, load_frames

EVENT_FILES = sorted(SCENARIOS.glob("*/*/events.jsonl"))
ALL_FRAMES = [frame for path in [ARI_CAPTURES / "events_all.jsonl", *EVENT_FILES] for frame in load_frames(path)]


def test_capture_files_present() -> None:
    assert len(EVENT_FILES) >= 40 and len(ALL_FRAMES) > 1500


def test_every_captured_frame_parses_into_its_typed_event() -> None:
    for frame in ALL_FRAMES:
        event = m.parse_event(frame)
        raw = json.loads(frame)
        assert not isinstance(event, m.UnknownEvent), (raw["type"], getattr(event, "problem", None))
        assert type(event).__name__ == raw["type"]
        assert event.type == raw["type"] and event.application == "demo"
        assert event.raw == raw


def test_first_event_files_parse() -> None:
    files = sorted(ARI_CAPTURES.glob("event_*.json"))
    files = [f for f in files if f.name != "event_counts.json"]
    assert len(files) == 16
    for path in files:
        event = m.parse_event(path.read_bytes())
        assert type(event).__name__ == path.stem.removeprefix("event_")


def test_counts_per_type_equal_event_counts_json() -> None:
    expected = json.loads((ARI_CAPTURES / "event_counts.json").read_text())
    counts = collections.Counter(type(m.parse_event(f)).__name__ for f in load_frames(ARI_CAPTURES / "events_all.jsonl"))
    assert dict(counts) == expected


def test_counts_per_scenario_equal_each_readme() -> None:
    # Each scenario README has "## Events (N messages)" then a "| type | count |" table.
    checked = 0
    for path in EVENT_FILES:
        readme = (path.parent / "README.md").read_text()
        head = re.search(r"^## Events \((\d+) messages\)$(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
        assert head is not None, path.parent.name
        expected = {t: int(n) for t, n in re.findall(r"^\| (\w+) \| (\d+) \|$", head.group(2), re.MULTILINE)}
        assert sum(expected.values()) == int(head.group(1)) == len(load_frames(path))
        counts = collections.Counter(type(m.parse_event(f)).__name__ for f in load_frames(path))
        assert dict(counts) == expected, path.parent.name
        checked += 1
    assert checked == len(EVENT_FILES)


def test_timestamps_keep_exact_text_and_milliseconds() -> None:
    frame = (ARI_CAPTURES / "event_StasisStart.json").read_text()
    event = m.parse_event(frame)
    assert isinstance(event, m.StasisStart)
    assert event.timestamp is not None and event.timestamp.text == "2026-11-25T17:22:10.431+0000"
    at = event.timestamp.at
    assert at is not None and at.tzinfo is not None and at.utcoffset() == UTC.utcoffset(None)
    assert (at.hour, at.minute, at.second, at.microsecond) == (17, 22, 10, 431_000)
    assert event.channel.creationtime is not None and event.channel.creationtime.text == "2026-11-25T17:22:10.431+0000"
    for frame in ALL_FRAMES:
        ts = m.parse_event(frame).timestamp
        assert ts is not None and ts.at is not None and ts.text == json.loads(frame)["timestamp"]


def test_stasis_start_fields() -> None:
    event = m.parse_event((ARI_CAPTURES / "event_StasisStart.json").read_text())
    assert isinstance(event, m.StasisStart)
    assert event.args == ("inbound", "1000")
    ch = event.channel
    assert (ch.id, ch.name, ch.state) == ("1795627330.0", "PJSIP/sipp-00000000", "Ring")
    assert ch.caller == m.CallerId("sipp", "sipp") and ch.dialplan.app_data == "demo,inbound,1000"
    assert ch.dialplan.priority == 2 and event.replace_channel is None
    assert event.channel_ids == ("1795627330.0",)


def test_replace_channel_on_transfer_stasis_start() -> None:
    starts = [m.parse_event(f) for f in load_frames(SCENARIOS / "03_bridge/i_sip_refer_blind_transfer/events.jsonl")]
    replacing = [e for e in starts if isinstance(e, m.StasisStart) and e.replace_channel is not None]
    assert replacing and all(e.channel.name.startswith("Local/3100@") for e in replacing)


def test_hangup_request_soft_flag_and_destroyed_cause() -> None:
    hr = m.parse_event((ARI_CAPTURES / "event_ChannelHangupRequest.json").read_text())
    assert isinstance(hr, m.ChannelHangupRequest) and (hr.cause, hr.soft) == (32, True)
    destroyed = m.parse_event((ARI_CAPTURES / "event_ChannelDestroyed.json").read_text())
    assert isinstance(destroyed, m.ChannelDestroyed)
    assert (destroyed.cause, destroyed.cause_txt, destroyed.fs_cause) == (16, "Normal Clearing", "NORMAL_CLEARING")
    # A remote BYE without Reason: no cause/soft keys at all (02a).
    plain = [
        e for e in map(m.parse_event, load_frames(SCENARIOS / "02_dial/a_answer_originate_remote_hangup/events.jsonl"))
        if isinstance(e, m.ChannelHangupRequest)
    ]
    assert plain and plain[0].cause is None and plain[0].soft is False


@pytest.mark.parametrize(
    ("folder", "cause", "cause_txt", "fs", "tech"),
    [
        ("02_dial/c_busy_originate", 17, "User busy", "USER_BUSY", 486),
        ("02_dial/e_noanswer_originate_timeout5", 19, "User alerting, no answer", "NO_ANSWER", None),
        ("02_dial/a_answer_originate_remote_hangup", 0, "Unknown", "NORMAL_CLEARING", None),
        ("03_bridge/g_redirect", 23, "Redirected to new destination", "REDIRECTION_TO_NEW_DESTINATION", None),
    ],
)
def test_captured_destroy_causes_map_to_freeswitch_names(folder: str, cause: int, cause_txt: str, fs: str, tech: int | None) -> None:
    destroyed = [e for e in map(m.parse_event, load_frames(SCENARIOS / folder / "events.jsonl")) if isinstance(e, m.ChannelDestroyed)]
    match = [e for e in destroyed if e.cause == cause]
    assert match, [(e.cause, e.cause_txt) for e in destroyed]
    assert match[0].cause_txt == cause_txt and match[0].fs_cause == fs
    if tech is not None:
        assert match[0].tech_cause == tech


def test_rejected_404_and_603_causes() -> None:
    frames = load_frames(SCENARIOS / "02_dial/i_rejected_404_and_603/events.jsonl")
    causes = {e.cause: e.fs_cause for e in map(m.parse_event, frames) if isinstance(e, m.ChannelDestroyed)}
    assert causes[1] == "UNALLOCATED_NUMBER" and causes[21] == "CALL_REJECTED"


def test_cause_table_uses_freeswitch_names_and_round_trips() -> None:
    for code, name in m.Q850_TO_FS.items():
        assert name in HANGUP_CAUSES
        assert m.q850_code(name) == code
    assert m.fs_cause_name(None) == "NORMAL_CLEARING"
    assert m.fs_cause_name(26) == "LOSE_RACE" and "LOSE_RACE" in HANGUP_CAUSES
    assert m.fs_cause_name(250) == "NORMAL_UNSPECIFIED"
    assert m.q850_code("user_busy") == 17 and m.q850_code("ALLOTTED_TIMEOUT") is None
    # Every cause Asterisk reported in the captures maps to a name switchctl knows.
    for frame in ALL_FRAMES:
        event = m.parse_event(frame)
        if isinstance(event, m.ChannelDestroyed):
            assert event.fs_cause in HANGUP_CAUSES


def test_dial_statuses_and_peer() -> None:
    frames = load_frames(SCENARIOS / "02_dial/c_busy_originate/events.jsonl")
    dials = [e for e in map(m.parse_event, frames) if isinstance(e, m.Dial)]
    assert [d.dialstatus for d in dials] == ["", "RINGING", "BUSY"]
    assert dials[0].dialstring and dials[0].caller is None
    assert dials[0].channel_ids == (dials[0].peer.id,)


def test_playback_recording_dtmf_and_bridge_events() -> None:
    pb = m.parse_event((ARI_CAPTURES / "event_PlaybackStarted.json").read_text())
    assert isinstance(pb, m.PlaybackStarted) and pb.playback.media_uri == "sound:beep" and pb.playback.state == "playing"
    dtmf = m.parse_event((ARI_CAPTURES / "event_ChannelDtmfReceived.json").read_text())
    assert isinstance(dtmf, m.ChannelDtmfReceived) and (dtmf.digit, dtmf.duration_ms) == ("1", 280)
    entered = m.parse_event((ARI_CAPTURES / "event_ChannelEnteredBridge.json").read_text())
    assert isinstance(entered, m.ChannelEnteredBridge)
    assert entered.bridge.channels == ("1795627335.1",) and entered.bridge.bridge_type == "mixing"
    events = [m.parse_event(f) for f in load_frames(SCENARIOS / "06_snoop/a_spy_and_whisper/events.jsonl")]
    failed = [e for e in events if isinstance(e, m.RecordingFailed)]
    assert failed[0].recording.cause == "Cannot record channel while in bridge"
    rec = [e for e in map(m.parse_event, load_frames(SCENARIOS / "05_recording/a_channel_record/events.jsonl"))
           if isinstance(e, m.RecordingFinished)]
    assert rec and all(isinstance(e.recording.duration, int) for e in rec)
    assert any(e.recording.silence_duration is not None for e in rec)


def test_transfer_events() -> None:
    transfers = [e for e in map(m.parse_event, load_frames(SCENARIOS / "03_bridge/j_sip_refer_ari_only/events.jsonl"))
                 if isinstance(e, m.ChannelTransfer)]
    assert transfers[0].destination == "3100" and transfers[0].state is None
    assert transfers[1].state == "channel_progress" and transfers[0].bridge is not None
    assert transfers[0].channel_ids == ("1795633312.61", "1795633312.62")
    att = [e for e in map(m.parse_event, load_frames(SCENARIOS / "03_bridge/l_sip_refer_attended_transfer/events.jsonl"))
           if isinstance(e, m.BridgeAttendedTransfer)]
    assert att[0].destination_type == "link" and att[0].is_external is False and att[0].result == "Success"
    blind = [e for e in map(m.parse_event, load_frames(SCENARIOS / "03_bridge/i_sip_refer_blind_transfer/events.jsonl"))
             if isinstance(e, m.BridgeBlindTransfer)]
    assert blind[0].is_external is True and blind[0].exten == "3100"


def test_unknown_and_malformed_events_never_fail() -> None:
    unknown = m.parse_event('{"type":"EndpointStateChange","timestamp":"2026-11-25T17:22:10.431+0000","endpoint":{}}')
    assert isinstance(unknown, m.UnknownEvent) and unknown.type == "EndpointStateChange" and unknown.problem is None
    broken = m.parse_event({"type": "ChannelDestroyed", "cause": 16})  # no channel
    assert isinstance(broken, m.UnknownEvent) and "ChannelDestroyed did not parse" in (broken.problem or "")
    untyped = m.parse_event("{}")
    assert isinstance(untyped, m.UnknownEvent) and untyped.problem == "event has no 'type'"
    odd_time = m.parse_event('{"type":"X","timestamp":"yesterday"}')
    assert odd_time.timestamp == m.Timestamp("yesterday", None)
    with pytest.raises(m.AriProtocolError, match="not JSON"):
        m.parse_event("not json")
    with pytest.raises(m.AriProtocolError, match="JSON object"):
        m.parse_event("[1, 2]")


def test_rest_bodies_parse_into_resources() -> None:
    ch = m.Channel.parse(json.loads((ARI_CAPTURES / "rest_originate_local.json").read_text()))
    assert ch.name == "Local/3000@echo-00000000;1" and ch.state == "Down"
    br = m.Bridge.parse(json.loads((ARI_CAPTURES / "rest_bridge_get_two.json").read_text()))
    assert br.channels == ("1795627335.1", "1795627335.2") and br.technology == "native_rtp"
    pb = m.Playback.parse(json.loads((ARI_CAPTURES / "rest_channel_play_tone.json").read_text()))
    assert pb.media_uri == "tone:ring;tonezone=us" and pb.state == "queued"
    apps = m.parse_list(json.loads((ARI_CAPTURES / "rest_applications.json").read_text()), m.Application.parse)
    assert apps[0].name == "demo" and apps[0].channel_ids == ()
    ping = m.AsteriskPing.parse(json.loads((ARI_CAPTURES / "rest_asterisk_ping.json").read_text()))
    assert ping.ping == "pong" and ping.timestamp is not None and ping.timestamp.at is not None
    with pytest.raises(m.AriProtocolError):
        m.parse_list({"id": "x"}, m.Channel.parse)
