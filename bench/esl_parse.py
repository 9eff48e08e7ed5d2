"""Benchmark: ESL event parsing, switchctl's codec vs greenswitch vs genesis, on captured streams.

Each parser gets the same bytes (the event frames of real FreeSWITCH captures, replicated to at
least 20,000 events) and must produce, per event, a dict of decoded header values:
- ours: FrameParser (fed in 64 KiB reads) + decode() -> Event.headers (all values URL-decoded);
- greenswitch: ESLProtocol.receive_events() on an in-memory socket file (its own framing + parser);
- genesis: ESLReaderFSM (its framing state machine + parse_headers); for json, genesis hands the body
  over raw, so json.loads(body) is added to give it a header dict (labelled "+json.loads").
greenswitch has no json event support (it runs its plain parser on the JSON text), so it is skipped
for json. Run: .venv/bin/python bench/esl_parse.py [--min-events N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from switchctl.esl.codec import Event, FrameParser, decode  # noqa: E402

# The recorded streams: ../shared/captures beside the checkout, or SWITCHCTL_CAPTURES.
_found = [p for p in (Path(os.environ.get("SWITCHCTL_CAPTURES", "/nonexistent")),
                      ROOT.parent / "shared" / "captures", Path("/work/shared/captures"))
          if (p / "freeswitch").is_dir()]
if not _found:
    sys.exit("esl_parse: captures not found (../shared/captures beside the checkout, or SWITCHCTL_CAPTURES)")
CAPTURES = _found[0]
CORPORA = {
    "plain": [
        CAPTURES / "freeswitch/inbound_plain/inbound_plain.recv.raw",
        CAPTURES / "freeswitch/outbound_sipp_dtmf/call001.recv.raw",
        CAPTURES / "freeswitch/outbound_loopback/call001.recv.raw",
    ],
    "json": [
        CAPTURES / "freeswitch/inbound_json/inbound_json.recv.raw",
        CAPTURES / "freeswitch-scenarios/s1_event_sets/v2_myevents_json.recv.raw",
    ],
}
TARGETS = {"plain": 40_000, "json": 100_000}
READ_SIZE = 64 * 1024


def event_frames(paths: list[Path]) -> tuple[bytes, int]:
    """The event frames (exact captured bytes) of the given streams, concatenated."""
    out = bytearray()
    count = 0
    for path in paths:
        data = path.read_bytes()
        index = json.loads(path.with_name(path.name.replace(".recv.raw", ".index.json")).read_text())
        pos = 0
        for entry in index:
            if entry["content_type"].startswith("text/event-"):
                out += data[pos : pos + entry["bytes"]]
                count += 1
            pos += entry["bytes"]
    return bytes(out), count


def run_ours(data: bytes) -> int:
    parser = FrameParser()
    n = 0
    for i in range(0, len(data), READ_SIZE):
        for frame in parser.feed(data[i : i + READ_SIZE]):
            message = decode(frame)
            if isinstance(message, Event) and message.headers:
                n += 1
    return n


def load_greenswitch() -> Callable[[bytes], int] | str:
    try:
        from greenswitch.esl import ESLProtocol  # type: ignore[import-untyped]
    except Exception as exc:  # noqa: BLE001 - report whatever stops the import
        return f"cannot import greenswitch ({exc.__class__.__name__}: {exc})"

    class Collector:
        def __init__(self) -> None:
            self.n = 0

        def put(self, event) -> None:  # greenswitch's event queue interface
            if event.headers:
                self.n += 1

    class NullSock:
        def close(self) -> None:
            pass

    def run(data: bytes) -> int:
        proto = ESLProtocol()
        proto.sock_file = io.BytesIO(data)
        proto.sock = NullSock()
        proto.connected = True
        proto._esl_event_queue = Collector()
        proto.receive_events()
        return proto._esl_event_queue.n

    return run


def load_genesis(fmt: str) -> Callable[[bytes], int] | str:
    try:
        from genesis.protocol.reader_fsm import ESLReaderFSM  # type: ignore[import-untyped]
    except Exception as exc:  # noqa: BLE001
        return f"cannot import genesis ({exc.__class__.__name__}: {exc})"

    def run(data: bytes) -> int:
        fsm = ESLReaderFSM()
        pos = 0
        n = 0
        size = len(data)
        while pos < size:
            end = data.find(b"\n\n", pos)
            if end < 0:
                break
            events, length = fsm.process_headers(data[pos:end].decode("utf-8"))
            pos = end + 2
            if length:
                events = fsm.process_body(data[pos : pos + length])
                pos += length
            for event in events:
                headers = json.loads(event.body) if fmt == "json" else event.data
                if headers:
                    n += 1
        return n

    return run


def measure(fn: Callable[[bytes], int], data: bytes, expected: int, repeat: int) -> tuple[float, int]:
    best = float("inf")
    got = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = fn(data)
        best = min(best, time.perf_counter() - t0)
    return expected / best, got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    failed = False
    for fmt, paths in CORPORA.items():
        one, per_copy = event_frames(paths)
        copies = -(-args.min_events // per_copy)
        data = one * copies
        expected = per_copy * copies
        print(f"\n== {fmt}: {expected} events, {len(data) / 1e6:.1f} MB "
              f"({', '.join(p.name for p in paths)} x{copies})")
        ours_rate, got = measure(run_ours, data, expected, args.repeat)
        if got != expected:
            print(f"   switchctl parsed {got} events, expected {expected}: WRONG")
            failed = True
        target = TARGETS[fmt]
        verdict = "meets" if ours_rate >= target else "BELOW"
        print(f"   switchctl            {ours_rate:>10,.0f} events/s   ({verdict} target {target:,})")
        others: list[tuple[str, Callable[[bytes], int] | str]] = []
        if fmt == "plain":
            others.append(("greenswitch", load_greenswitch()))
        else:
            others.append(("greenswitch", "skipped: no json event support (parses JSON text as plain)"))
        others.append(("genesis" + ("+json.loads" if fmt == "json" else ""), load_genesis(fmt)))
        for name, fn in others:
            if isinstance(fn, str):
                print(f"   {name:<20} {fn}")
                continue
            try:
                rate, n = measure(fn, data, expected, args.repeat)
            except Exception as exc:  # noqa: BLE001 - a third-party parser failing is a result
                print(f"   {name:<20} failed: {exc.__class__.__name__}: {exc}")
                continue
            note = "" if n == expected else f"  (it yielded {n} events)"
            print(f"   {name:<20} {rate:>10,.0f} events/s   ours/theirs = {ours_rate / rate:.2f}x{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
