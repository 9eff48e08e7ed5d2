"""FreeSWITCH-shaped events for simulated channels (pure; header names, order and values as 1.11.1).

Structure, from switch_event.c / switch_channel.c / switch_caller.c and checked against the captures:

    common headers (Event-Name ... Event-Sequence)          EventFactory.event
    [event headers FreeSWITCH adds before the channel data]  e.g. Hangup-Cause, Bridge-A-Unique-ID
    Channel-State ... Answer-State [Hangup-Cause] [codecs]  switch_channel_event_set_basic_data
    Caller-* profile [Other-Type, Other-Leg-* profile]
    variable_* (only for the "extended" events)              switch_channel_event_set_extended_data
    [event headers added after the channel data]            e.g. Application-*, DTMF-*

`ChannelData.variables` is insertion-ordered like FreeSWITCH's channel variable list; use
`ChannelData.set_var`, which moves a re-set variable to the end as switch_channel_set_variable does.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = [
    "CALLING",
    "CS_NUMBERS",
    "ChannelData",
    "EventFactory",
    "HANGUP_CAUSE_Q850",
    "RECORD_FILE_CALLING",
    "hangup_timestamp_variables",
    "local_stamp",
]

Headers = list[tuple[str, str]]

# channel_state_t numbers (switch_types.h), sent as Channel-State-Number.
CS_NUMBERS = {
    "CS_NEW": 0,
    "CS_INIT": 1,
    "CS_ROUTING": 2,
    "CS_SOFT_EXECUTE": 3,
    "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5,
    "CS_PARK": 6,
    "CS_CONSUME_MEDIA": 7,
    "CS_HIBERNATE": 8,
    "CS_RESET": 9,
    "CS_HANGUP": 10,
    "CS_REPORTING": 11,
    "CS_DESTROY": 12,
    "CS_NONE": 13,
}

# Q.850 codes of switch_channel_cause2str names (switch_types.h), for variable_hangup_cause_q850.
HANGUP_CAUSE_Q850 = {
    "NONE": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_TRANSIT_NET": 2,
    "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6,
    "CALL_AWARDED_DELIVERED": 7,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "REDIRECTION_TO_NEW_DESTINATION": 23,
    "EXCHANGE_ROUTING_ERROR": 25,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "RESPONSE_TO_STATUS_ENQUIRY": 30,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "ACCESS_INFO_DISCARDED": 43,
    "REQUESTED_CHAN_UNAVAIL": 44,
    "PRE_EMPTED": 45,
    "FACILITY_NOT_SUBSCRIBED": 50,
    "OUTGOING_CALL_BARRED": 52,
    "INCOMING_CALL_BARRED": 54,
    "BEARERCAPABILITY_NOTAUTH": 57,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63,
    "BEARERCAPABILITY_NOTIMPL": 65,
    "CHAN_NOT_IMPLEMENTED": 66,
    "FACILITY_NOT_IMPLEMENTED": 69,
    "SERVICE_NOT_IMPLEMENTED": 79,
    "INVALID_CALL_REFERENCE": 81,
    "INCOMPATIBLE_DESTINATION": 88,
    "INVALID_MSG_UNSPECIFIED": 95,
    "MANDATORY_IE_MISSING": 96,
    "MESSAGE_TYPE_NONEXIST": 97,
    "WRONG_MESSAGE": 98,
    "IE_NONEXIST": 99,
    "INVALID_IE_CONTENTS": 100,
    "WRONG_CALL_STATE": 101,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MANDATORY_IE_LENGTH_ERROR": 103,
    "PROTOCOL_ERROR": 111,
    "INTERWORKING": 127,
    "ORIGINATOR_CANCEL": 487,
    "CRASH": 700,
    "SYSTEM_SHUTDOWN": 701,
    "LOSE_RACE": 702,
    "MANAGER_REQUEST": 503,
    "BLIND_TRANSFER": 600,
    "ATTENDED_TRANSFER": 601,
    "ALLOTTED_TIMEOUT": 602,
    "USER_CHALLENGE": 603,
    "MEDIA_TIMEOUT": 604,
    "PICKED_OFF": 605,
    "USER_NOT_REGISTERED": 606,
    "PROGRESS_TIMEOUT": 607,
    "GATEWAY_DOWN": 609,
}

# Event-Calling-File / Function / Line-Number of each event as FreeSWITCH 1.11.1 fired it (captures).
CALLING: dict[str, tuple[str, str, int]] = {
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", 626),
    "CHANNEL_ORIGINATE": ("switch_core_state_machine.c", "switch_core_session_run", 632),
    "CHANNEL_OUTGOING": ("switch_core_session.c", "switch_core_session_outgoing_channel", 768),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3848),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value", 3507),
    "CHANNEL_PROGRESS_MEDIA": ("switch_channel.c", "switch_channel_perform_mark_pre_answered", 3562),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2949),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2972),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3447),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", 943),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2409),
    "CHANNEL_CALLSTATE": ("switch_channel.c", "switch_channel_perform_set_callstate", 302),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1213),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1689),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1879),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", 1588),
    "CHANNEL_HOLD": ("switch_ivr.c", "switch_ivr_hold", 1558),
    "CHANNEL_UNHOLD": ("switch_ivr.c", "switch_ivr_unhold", 1638),
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", 2018),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 678),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", 1649),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", 2023),
    "RECORD_START": ("switch_ivr_async.c", "record_callback", 1482),
    "RECORD_STOP": ("switch_ivr_async.c", "send_record_stop_event", 1241),  # media bugs (s7)
    "CALL_UPDATE": ("mod_sofia.c", "sofia_receive_message", 2133),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", 1569),
    "API": ("switch_loadable_module.c", "switch_api_execute", 2954),
    "RELOADXML": ("switch_xml.c", "switch_xml_open_root", 2421),
}

# RECORD_START / RECORD_STOP of the `record` application fire from switch_ivr_record_file_event, not from
# the media bug (s7 has no `record` run: lines of switch_ivr_play_say.c whose PLAYBACK_* lines match s7).
RECORD_FILE_CALLING: dict[str, tuple[str, str, int]] = {
    "RECORD_START": ("switch_ivr_play_say.c", "switch_ivr_record_file_event", 770),
    "RECORD_STOP": ("switch_ivr_play_say.c", "switch_ivr_record_file_event", 1033),
}

# Events that carry variable_* headers (switch_channel_event_set_extended_data's list).
_EXTENDED = frozenset(
    {
        "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_ANSWER", "CHANNEL_PARK",
        "CHANNEL_UNPARK", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS",
        "CHANNEL_PROGRESS_MEDIA", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "REQUEST_PARAMS",
        "CHANNEL_DATA", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_DESTROY",
        "SESSION_HEARTBEAT", "API", "RECORD_START", "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP",
        "CALL_UPDATE", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "TEXT",
        "CUSTOM",
    }
)  # fmt: skip

# Events whose own headers FreeSWITCH adds BEFORE the channel data (the rest come after it).
_EXTRA_FIRST = frozenset(
    {
        "CHANNEL_HANGUP_COMPLETE", "CHANNEL_CALLSTATE", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE",
        "CALL_UPDATE", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "PRIVATE_COMMAND",
    }
)  # fmt: skip


def _stamp(us: int) -> str:
    """`%Y-%m-%d %T` of a µs timestamp; the simulated switch's local time is UTC."""
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


local_stamp = _stamp  # public name for api bodies (show channels' `created`)


def _gmt(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass
class ChannelData:
    """The state of one simulated channel, as FreeSWITCH reports it in events (filled by the engine).

    Fields after `other_leg_uuid` are the caller-profile and media details events print; their
    defaults are those of a sofia inbound call in the captures.
    """

    uuid: str
    name: str
    direction: str = "inbound"
    state: str = "CS_NEW"
    call_state: str = "DOWN"
    answer_state: str = "ringing"
    caller_number: str = ""
    caller_name: str = ""
    destination: str = ""
    context: str = "default"
    dialplan: str = "XML"
    created_us: int = 0
    profile_created_us: int = 0
    answered_us: int = 0
    progress_us: int = 0
    progress_media_us: int = 0
    hungup_us: int = 0
    transferred_us: int = 0
    last_hold_us: int = 0
    hold_accum_us: int = 0
    resurrected_us: int = 0
    bridged_us: int = 0
    hangup_cause: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    other_leg_uuid: str | None = None
    # --- caller profile (switch_caller_profile_event_set_data); None = same as the field it mirrors
    logical_direction: str | None = None  # None: direction
    username: str = ""
    orig_caller_name: str | None = None  # None: caller_name
    orig_caller_number: str | None = None  # None: caller_number
    callee_name: str = ""
    callee_number: str = ""
    network_addr: str = ""
    ani: str | None = None  # None: caller_number
    aniii: str = ""
    source: str = "mod_sofia"
    transfer_source: str = ""
    rdnis: str = ""
    profile_channel_name: str | None = None  # Caller-Channel-Name; None: name
    profile_index: str = "1"
    screen_bit: bool = True
    hide_name: bool = False
    hide_number: bool = False
    # --- channel
    state_number: int | None = None  # Channel-State-Number (channel->state); None: number of `state`
    hit_dialplan: bool | None = None  # None: true for inbound channels (CF_DIALPLAN otherwise)
    read_codec: tuple[str, int, int] | None = None  # (iananame, rate, bits/s) once media is up
    write_codec: tuple[str, int, int] | None = None
    other_type: str | None = None  # "originator" / "originatee": prints Other-Leg-* from other_leg
    other_leg: ChannelData | None = None
    # --- what CHANNEL_HANGUP_COMPLETE's timestamp variables need
    last_app: str | None = None
    last_arg: str | None = None
    dtmf_log: str = ""  # digits received, for variable_digits_dialed

    def set_var(self, name: str, value: str | None) -> None:
        """switch_channel_set_variable: (re)set moves the variable to the end; None unsets it."""
        self.variables.pop(name, None)
        if value is not None:
            self.variables[name] = value

    # ------------------------------------------------------------------ constructors

    @classmethod
    def new_inbound_sip(
        cls,
        uuid: str,
        caller_number: str,
        destination: str,
        *,
        now_us: int,
        caller_name: str = "sipp",
        host: str = "127.0.0.1",
        remote_port: int = 5080,
        local_port: int = 5070,
        profile: str = "internal",
        context: str = "public",
        session_id: int = 1,
        call_id: str | None = None,
        from_tag: str | None = None,
        subject: str | None = None,
        remote_sdp: str | None = None,
    ) -> ChannelData:
        """A sofia inbound channel as CHANNEL_CREATE shows it (captured sipp calls, generalised)."""
        name = f"sofia/{profile}/{caller_number}@{host}:{remote_port}"
        call_id = call_id or f"1-{session_id}@{host}"
        from_tag = from_tag or f"{session_id}SIPpTag001"
        sdp = remote_sdp or (
            f"v=0\r\no=user1 53655765 2353687637 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\na=ptime:20\r\n"
        )
        variables = {
            "direction": "inbound",
            "uuid": uuid,
            "call_uuid": uuid,
            "session_id": str(session_id),
            "sip_from_user": caller_number,
            "sip_from_port": str(remote_port),
            "sip_from_uri": f"{caller_number}@{host}:{remote_port}",
            "sip_from_host": host,
            "video_media_flow": "disabled",
            "audio_media_flow": "disabled",
            "text_media_flow": "disabled",
            "channel_name": name,
            "sip_call_id": call_id,
            "sip_local_network_addr": host,
            "sip_network_ip": host,
            "sip_network_port": str(remote_port),
            "sip_invite_stamp": str(now_us),
            "sip_received_ip": host,
            "sip_received_port": str(remote_port),
            "sip_via_protocol": "udp",
            "sip_from_user_stripped": caller_number,
            "sip_from_tag": from_tag,
            "sofia_profile_name": profile,
            "sofia_profile_url": f"sip:mod_sofia@{host}:{local_port}",
            "recovery_profile_name": profile,
            "sip_full_via": f"SIP/2.0/UDP {host}:{remote_port};branch=z9hG4bK-{session_id}-1-0",
            "sip_from_display": caller_name,
            "sip_full_from": f'"{caller_name}" <sip:{caller_number}@{host}:{remote_port}>;tag={from_tag}',
            "sip_full_to": f"<sip:{destination}@{host}:{local_port}>",
            "sip_req_user": destination,
            "sip_req_port": str(local_port),
            "sip_req_uri": f"{destination}@{host}:{local_port}",
            "sip_req_host": host,
            "sip_to_user": destination,
            "sip_to_port": str(local_port),
            "sip_to_uri": f"{destination}@{host}:{local_port}",
            "sip_to_host": host,
            "sip_contact_user": "sipp",
            "sip_contact_port": str(remote_port),
            "sip_contact_uri": f"sipp@{host}:{remote_port}",
            "sip_contact_host": host,
            "rtp_use_codec_string": "PCMU,PCMA,OPUS",
        }
        if subject is not None:
            variables["sip_subject"] = subject
        variables.update(
            {
                "sip_via_host": host,
                "sip_via_port": str(remote_port),
                "max_forwards": "70",
                "presence_id": f"{caller_number}@{host}",
                "switch_r_sdp": sdp,
                "ep_codec_string": "CORE_PCM_MODULE.PCMU@8000h@20i@64000b",
                "endpoint_disposition": "DELAYED NEGOTIATION",
            }
        )
        return cls(
            uuid=uuid,
            name=name,
            direction="inbound",
            state="CS_INIT",
            caller_number=caller_number,
            caller_name=caller_name,
            destination=destination,
            context=context,
            created_us=now_us,
            profile_created_us=now_us,
            variables=variables,
            username=caller_number,
            network_addr=host,
            source="mod_sofia",
        )

    @classmethod
    def new_loopback(
        cls,
        uuid: str,
        destination: str,
        *,
        now_us: int,
        leg: str = "a",
        context: str = "default",
        caller_number: str = "0000000000",
        caller_name: str = "",
        other_uuid: str = "",
    ) -> ChannelData:
        """A loopback leg (`loopback/<dest>-a` / `-b`) with the variables loopback sets at creation."""
        name = f"loopback/{destination}-{leg}"
        variables = {
            "direction": "outbound" if leg == "a" else "inbound",
            "uuid": uuid,
            "session_id": "1",
            "channel_name": name,
            "read_codec": "L16",
            "read_rate": "8000",
            "write_codec": "L16",
            "write_rate": "8000",
        }
        if other_uuid:
            variables["other_loopback_leg_uuid"] = other_uuid
        variables["loopback_leg"] = leg.upper()
        return cls(
            uuid=uuid,
            name=name,
            direction="outbound" if leg == "a" else "inbound",
            state="CS_INIT",
            caller_number=caller_number,
            caller_name=caller_name,
            destination=destination,
            context=context,
            created_us=now_us,
            profile_created_us=now_us,
            variables=variables,
            source="mod_loopback",
            read_codec=("L16", 8000, 128000),
            write_codec=("L16", 8000, 128000),
        )

    # ------------------------------------------------------------------ header blocks

    def profile_headers(self, prefix: str) -> Headers:
        """switch_caller_profile_event_set_data(profile, prefix): `Caller-*`, `Channel-*`, `Other-Leg-*`."""
        out: Headers = []

        def put(suffix: str, value: str) -> None:
            out.append((f"{prefix}-{suffix}", value))

        direction = self.direction
        put("Direction", direction)
        put("Logical-Direction", self.logical_direction or direction)
        if self.username:
            put("Username", self.username)
        if self.dialplan:
            put("Dialplan", self.dialplan)
        if self.caller_name:
            put("Caller-ID-Name", self.caller_name)
        if self.caller_number:
            put("Caller-ID-Number", self.caller_number)
        # 1.11.1 prints the Orig-* pair when the orig value itself is set (captured originate legs
        # have Caller-ID-Name "Outbound Call" and no Orig-Caller-ID-Name).
        orig = self.caller_name if self.orig_caller_name is None else self.orig_caller_name
        if orig:
            put("Orig-Caller-ID-Name", orig)
        orig = self.caller_number if self.orig_caller_number is None else self.orig_caller_number
        if orig:
            put("Orig-Caller-ID-Number", orig)
        if self.callee_name:
            put("Callee-ID-Name", self.callee_name)
        if self.callee_number:
            put("Callee-ID-Number", self.callee_number)
        if self.network_addr:
            put("Network-Addr", self.network_addr)
        ani = self.caller_number if self.ani is None else self.ani
        if ani:
            put("ANI", ani)
        if self.aniii:
            put("ANI-II", self.aniii)
        if self.destination:
            put("Destination-Number", self.destination)
        put("Unique-ID", self.uuid)
        if self.source:
            put("Source", self.source)
        if self.transfer_source:
            put("Transfer-Source", self.transfer_source)
        if self.context:
            put("Context", self.context)
        if self.rdnis:
            put("RDNIS", self.rdnis)
        put("Channel-Name", self.profile_channel_name or self.name)
        if self.profile_index:
            put("Profile-Index", self.profile_index)
        put("Profile-Created-Time", str(self.profile_created_us))
        put("Channel-Created-Time", str(self.created_us))
        put("Channel-Answered-Time", str(self.answered_us))
        put("Channel-Progress-Time", str(self.progress_us))
        put("Channel-Progress-Media-Time", str(self.progress_media_us))
        put("Channel-Hangup-Time", str(self.hungup_us))
        put("Channel-Transfer-Time", str(self.transferred_us))
        put("Channel-Resurrect-Time", str(self.resurrected_us))
        put("Channel-Bridged-Time", str(self.bridged_us))
        put("Channel-Last-Hold", str(self.last_hold_us))
        put("Channel-Hold-Accum", str(self.hold_accum_us))
        put("Screen-Bit", "true" if self.screen_bit else "false")
        put("Privacy-Hide-Name", "true" if self.hide_name else "false")
        put("Privacy-Hide-Number", "true" if self.hide_number else "false")
        return out

    def pending_state_number(self, event_name: str = "") -> int:
        """Channel-State-Number: channel->state, the state the channel is moving to.

        Channel-State is the running state; the number runs ahead of it (captures): 2 on
        CHANNEL_CREATE/ORIGINATE (CS_INIT, routing next), 1 on CHANNEL_OUTGOING (CS_NONE),
        12 on CHANNEL_DESTROY, and 10 (CS_HANGUP) on every event of a hung-up channel whose
        state machine has not reached CS_HANGUP yet. `state_number` overrides all of this.
        """
        if self.state not in CS_NUMBERS:
            raise ValueError(f"unknown channel state {self.state!r} (expected a CS_* name)")
        if self.state_number is not None:
            return self.state_number
        running = CS_NUMBERS[self.state]
        if event_name in ("CHANNEL_CREATE", "CHANNEL_ORIGINATE") and self.state == "CS_INIT":
            return CS_NUMBERS["CS_ROUTING"]
        if event_name == "CHANNEL_OUTGOING" and self.state == "CS_NONE":
            return CS_NUMBERS["CS_INIT"]
        if event_name == "CHANNEL_DESTROY":
            return CS_NUMBERS["CS_DESTROY"]
        if self.hangup_cause and running < CS_NUMBERS["CS_HANGUP"]:
            return CS_NUMBERS["CS_HANGUP"]
        return running

    def basic_headers(self, event_name: str = "") -> Headers:
        """switch_channel_event_set_basic_data (`event_name` only picks Channel-State-Number)."""
        number = self.pending_state_number(event_name)
        direction = "outbound" if self.direction == "outbound" else "inbound"
        hit = self.hit_dialplan if self.hit_dialplan is not None else direction == "inbound"
        out: Headers = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", direction),
            ("Presence-Call-Direction", direction),
            ("Channel-HIT-Dialplan", "true" if hit else "false"),
        ]
        if "presence_id" in self.variables:
            out.append(("Channel-Presence-ID", self.variables["presence_id"]))
        if "presence_data" in self.variables:
            out.append(("Channel-Presence-Data", self.variables["presence_data"]))
        out.append(("Channel-Call-UUID", self.variables.get("call_uuid", self.uuid)))
        out.append(("Answer-State", self.answer_state))
        if self.hangup_cause:
            out.append(("Hangup-Cause", self.hangup_cause))
        for label, codec in (("Read", self.read_codec), ("Write", self.write_codec)):
            if codec is not None:
                out += [
                    (f"Channel-{label}-Codec-Name", codec[0]),
                    (f"Channel-{label}-Codec-Rate", str(codec[1])),
                    (f"Channel-{label}-Codec-Bit-Rate", str(codec[2])),
                ]
        out += self.profile_headers("Caller")
        if self.other_type and self.other_leg is not None:
            out.append(("Other-Type", self.other_type))
            out += self.other_leg.profile_headers("Other-Leg")
        return out

    def variable_headers(self) -> Headers:
        return [(f"variable_{name}", value) for name, value in self.variables.items()]

    def apply_hangup_variables(self) -> None:
        """Set what FreeSWITCH sets before CHANNEL_HANGUP_COMPLETE (hangup_cause*, timestamps, CDR)."""
        if "end_uepoch" in self.variables:
            return  # CF_TIMESTAMP_SET: once per channel
        cause = self.hangup_cause or "NORMAL_CLEARING"
        self.set_var("hangup_cause", cause)
        self.set_var("hangup_cause_q850", str(HANGUP_CAUSE_Q850.get(cause, 0)))
        for name, value in hangup_timestamp_variables(self):
            self.set_var(name, value)


def hangup_timestamp_variables(ch: ChannelData) -> list[tuple[str, str | None]]:
    """switch_channel_set_timestamps: digits_dialed, *_stamp, *_epoch, durations (sec/msec/usec).

    The `sec`/`msec` values are differences of truncated times, as FreeSWITCH computes them
    (a call from .98 s to 4.90 s has duration 4 and billsec 3). A None value unsets the variable.
    """
    created, answered, hungup = ch.created_us, ch.answered_us, ch.hungup_us
    out: list[tuple[str, str | None]] = [("digits_dialed", ch.dtmf_log or "none")]
    out.append(("start_stamp", _stamp(created)))
    out.append(("profile_start_stamp", _stamp(ch.profile_created_us)))
    for name, us in (
        ("answer_stamp", answered),
        ("bridge_stamp", ch.bridged_us),
        ("hold_stamp", ch.last_hold_us),
        ("resurrect_stamp", ch.resurrected_us),
        ("progress_stamp", ch.progress_us),
        ("progress_media_stamp", ch.progress_media_us),
    ):
        if us:
            out.append((name, _stamp(us)))
    out.append(("end_stamp", _stamp(hungup)))
    for name, us in (
        ("start", created),
        ("profile_start", ch.profile_created_us),
        ("answer", answered),
        ("bridge", ch.bridged_us),
        ("last_hold", ch.last_hold_us),
    ):
        out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]
    out += [
        ("hold_accum_seconds", str(ch.hold_accum_us // 1_000_000)),
        ("hold_accum_usec", str(ch.hold_accum_us)),
        ("hold_accum_ms", str(ch.hold_accum_us // 1000)),
    ]
    for name, us in (
        ("resurrect", ch.resurrected_us),
        ("progress", ch.progress_us),
        ("progress_media", ch.progress_media_us),
        ("end", hungup),
    ):
        out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]

    def diff(later: int, earlier: int) -> tuple[int, int, int]:
        return (later // 1_000_000 - earlier // 1_000_000, later // 1000 - earlier // 1000, later - earlier)

    duration = diff(hungup, created)
    zero = (0, 0, 0)
    wait = diff(ch.bridged_us, created) if ch.bridged_us > created else zero
    bill = diff(hungup, answered) if answered else zero
    flow = diff(hungup, created) if answered else zero
    answer = diff(answered, created) if answered else zero
    progress = diff(ch.progress_us, created) if ch.progress_us else zero
    media = diff(ch.progress_media_us, created) if ch.progress_media_us else zero
    caller_id = f'"{ch.caller_name}" <{ch.caller_number}>' if ch.caller_name else ch.caller_number
    out += [("last_app", ch.last_app or None), ("last_arg", ch.last_arg or None), ("caller_id", caller_id or None)]
    for index, unit in ((0, "sec"), (1, "msec"), (2, "usec")):
        prefix = {"sec": "duration", "msec": "mduration", "usec": "uduration"}[unit]
        out += [
            (prefix, str(duration[index])),
            (f"bill{unit}", str(bill[index])),
            (f"progress{unit}", str(progress[index])),
            (f"answer{unit}", str(answer[index])),
            (f"wait{unit}", str(wait[index])),
            (f"progress_media{unit}", str(media[index])),
            (f"flow_bill{unit}", str(flow[index])),
        ]
    return out


class EventFactory:
    """Builds the header lists of the events one simulated FreeSWITCH fires (global Event-Sequence)."""

    def __init__(
        self,
        *,
        core_uuid: str,
        hostname: str = "vm",
        switchname: str = "vm",
        ipv4: str = "192.0.2.2",
        ipv6: str = "fd00::2",
        first_sequence: int = 1,
    ) -> None:
        self.core_uuid = core_uuid
        self.hostname = hostname
        self.switchname = switchname
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self._sequence = itertools.count(first_sequence)

    def event(
        self,
        name: str,
        *,
        now_us: int,
        calling: tuple[str, str, int] | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Headers:
        """The common headers every event starts with, then `extra`.

        `calling` defaults to the captured (file, function, line) of `name` (see CALLING).
        """
        if calling is None:
            if name not in CALLING:
                raise ValueError(f"no captured Event-Calling-* for {name!r}: pass calling=(file, func, line)")
            calling = CALLING[name]
        file, function, line = calling
        headers: Headers = [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.switchname),
            ("FreeSWITCH-IPv4", self.ipv4),
            ("FreeSWITCH-IPv6", self.ipv6),
            ("Event-Date-Local", _stamp(now_us)),
            ("Event-Date-GMT", _gmt(now_us)),
            ("Event-Date-Timestamp", str(now_us)),
            ("Event-Calling-File", file),
            ("Event-Calling-Function", function),
            ("Event-Calling-Line-Number", str(line)),
            ("Event-Sequence", str(next(self._sequence))),
        ]
        headers.extend(extra)
        return headers

    def channel_event(
        self,
        name: str,
        ch: ChannelData,
        *,
        now_us: int,
        extra: Sequence[tuple[str, str]] = (),
        calling: tuple[str, str, int] | None = None,
    ) -> Headers:
        """A channel event with FreeSWITCH's header order.

        `extra` are the event's own headers in FreeSWITCH's order, e.g. Application,
        Application-Data, Application-Response, Application-UUID for CHANNEL_EXECUTE_COMPLETE;
        DTMF-Digit, DTMF-Duration, DTMF-Source for DTMF; Original-Channel-Call-State and
        Channel-Call-State-Number for CHANNEL_CALLSTATE; Bridge-A/B-Unique-ID for (UN)BRIDGE.
        They are placed before or after the channel data as FreeSWITCH does.
        CHANNEL_HANGUP_COMPLETE adds its leading Hangup-Cause and first sets the hangup
        variables on `ch` (`ChannelData.apply_hangup_variables`), as FreeSWITCH does at reporting.
        """
        before: Headers = []
        after: Headers = list(extra)
        if name == "CHANNEL_HANGUP_COMPLETE":
            ch.apply_hangup_variables()
            before = [("Hangup-Cause", ch.hangup_cause or "NORMAL_CLEARING")] + after
            after = []
        elif name in _EXTRA_FIRST:
            before, after = after, []
        body: Headers = before + ch.basic_headers(name)
        if name in _EXTENDED:
            body += ch.variable_headers()
        body += after
        return self.event(name, now_us=now_us, calling=calling, extra=body)

    def connect_headers(
        self,
        ch: ChannelData,
        *,
        now_us: int,
        socket_mode: str = "async",
        control: str = "full",
    ) -> Headers:
        """The outbound `connect` reply's CHANNEL_DATA event (give it to serverwire.connect_reply)."""
        body = ch.profile_headers("Channel") + ch.basic_headers("CHANNEL_DATA") + ch.variable_headers()
        body += [
            ("Content-Type", "command/reply"),
            ("Reply-Text", "+OK\n"),
            ("Socket-Mode", socket_mode),
            ("Control", control),
        ]
        return self.event("CHANNEL_DATA", now_us=now_us, extra=body)

    def background_job(
        self,
        job_uuid: str,
        command: str,
        arg: str | None,
        body: str,
        *,
        now_us: int,
        owner_uuid: str | None = None,
    ) -> tuple[Headers, str]:
        """BACKGROUND_JOB of a bgapi: (headers, body); Job-Command-Arg is left out when the command
        had no argument (api_exec), Job-Owner-UUID when there is no owner (as captured)."""
        extra: Headers = [("Job-UUID", job_uuid)]
        if owner_uuid:
            extra.append(("Job-Owner-UUID", owner_uuid))
        extra.append(("Job-Command", command))
        if arg:
            extra.append(("Job-Command-Arg", arg))
        headers = self.event("BACKGROUND_JOB", now_us=now_us, extra=extra)
        return headers, body
