"""Generate the example site's prompts: short tones, 8 kHz mono 16-bit PCM .wav (what FreeSWITCH plays
without resampling on a narrowband call). Real recordings replace these; the flows only need files
that exist and play. Deterministic: running it again gives identical bytes.

    python examples/phonebar/sounds/make_sounds.py
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

RATE = 8000
AMPLITUDE = 8000  # about -12 dBFS: audible, never clipping

# name -> list of (frequency Hz or 0 for silence, milliseconds). Each file stays under 1.2 s (< 20 KB).
PROMPTS: dict[str, list[tuple[int, int]]] = {
    "welcome.wav": [(440, 200), (0, 50), (554, 200), (0, 50), (659, 300)],  # main menu greeting
    "main_short.wav": [(659, 150), (0, 50), (659, 150)],  # main menu, repeated
    "rates_menu.wav": [(523, 200), (0, 50), (659, 200), (0, 50), (784, 200)],  # rates and balance menu
    "rates.wav": [(784, 300), (0, 100), (784, 300)],  # "calls cost ..."
    "balance.wav": [(698, 300), (0, 100), (880, 300)],  # "your balance is ..."
    "your_number.wav": [(587, 400)],  # "you are calling from"
    "operator.wav": [(494, 250), (0, 50), (392, 250)],  # "connecting you to the operator"
    "invalid.wav": [(330, 300), (0, 50), (262, 300)],  # "that is not a valid choice"
    "goodbye.wav": [(659, 200), (0, 50), (523, 200), (0, 50), (392, 400)],  # exit sound
    "hours.wav": [(392, 300), (0, 100), (392, 300), (0, 100), (392, 300)],  # "we are open from 8 to 23"
    # booth calls (dialplans/booth.yaml)
    "no_credit.wav": [(440, 250), (0, 50), (349, 250), (0, 50), (262, 400)],  # "your credit is used up"
    "not_sold.wav": [(523, 250), (0, 50), (415, 250), (0, 50), (523, 250)],  # "calls to this number are not sold here"
    "not_allowed.wav": [(622, 200), (0, 50), (622, 200), (0, 50), (466, 400)],  # "this number cannot be called from here"
    "number_unknown.wav": [(950, 330), (0, 30), (1400, 330), (0, 30), (1800, 330)],  # "this number does not exist"
}


def samples(segments: list[tuple[int, int]]) -> bytes:
    out = bytearray()
    for freq, ms in segments:
        count = RATE * ms // 1000
        for i in range(count):
            if freq == 0:
                value = 0
            else:
                # 5 ms fade in/out so tones do not click
                ramp = min(1.0, i / 40, (count - 1 - i) / 40)
                value = int(AMPLITUDE * ramp * math.sin(2 * math.pi * freq * i / RATE))
            out += struct.pack("<h", value)
    return bytes(out)


def write(path: Path, segments: list[tuple[int, int]]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples(segments))


def main() -> None:
    here = Path(__file__).resolve().parent
    for name, segments in PROMPTS.items():
        write(here / name, segments)
        print(f"{name}: {(here / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
