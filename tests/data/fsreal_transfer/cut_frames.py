"""How the captures here were cut: split a recorded ESL byte stream (server -> client) into its messages
and keep, byte for byte, those whose event headers match. Usage:
cut_frames.py STREAM OUT 'Header=value[|value...]' ...   (every header must match one of its values)"""
import json
import sys
from urllib.parse import unquote


def frames(data: bytes):
    at = 0
    while at < len(data):
        end = data.index(b"\n\n", at)
        head = data[at:end].decode()
        length = 0
        for line in head.split("\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        stop = end + 2 + length
        yield data[at:stop], data[end + 2:stop]
        at = stop


def event_headers(body: bytes) -> dict[str, str]:
    if body.startswith(b"{"):  # text/event-json (what the controller's inbound connection asks for)
        try:
            return {k: str(v) for k, v in json.loads(body).items()}
        except ValueError:
            return {}
    out = {}
    for line in body.split(b"\n\n", 1)[0].decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = unquote(value)
    return out


def main(stream: str, out: str, *wanted: str) -> None:
    pairs = [w.split("=", 1) for w in wanted]
    kept = [raw for raw, body in frames(open(stream, "rb").read())
            if all(event_headers(body).get(k) in v.split("|") for k, v in pairs)]
    if not kept:
        raise SystemExit(f"nothing matched {wanted}")
    with open(out, "wb") as f:
        f.write(b"".join(kept))
    print(out, len(kept), "message(s)")


if __name__ == "__main__":
    main(*sys.argv[1:])
