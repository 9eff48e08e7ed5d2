"""Pure media-duration rules of the simulator."""

import math

import pytest

from switchctl.sim.config import Press, Route, SimConfig
from switchctl.sim.media import FileNotFound, playback_seconds, say_file_count, tone_stream_seconds


def test_tone_stream_durations_from_captures():
    assert tone_stream_seconds("%(400,100,600);loops=1") == 0.5  # s1: played 0.52 s
    assert tone_stream_seconds("%(1000,0,440);loops=10") == 10.0  # s5
    assert tone_stream_seconds("%(200,0,500)") == 0.2
    assert tone_stream_seconds("%(100,100,350,440);%(300,0,620)") == 0.5
    assert math.isinf(tone_stream_seconds("%(1000,0,440);loops=-1"))


def test_playback_paths():
    assert playback_seconds("silence_stream://250", file_seconds=1.0) == 0.25
    assert math.isinf(playback_seconds("silence_stream://-1", file_seconds=1.0))
    assert playback_seconds("ivr/welcome.wav", file_seconds=2.5) == 2.5
    assert playback_seconds("file_string://a.wav!b.wav!silence_stream://500", file_seconds=1.0) == 2.5
    with pytest.raises(FileNotFound):
        playback_seconds("gone.wav", file_seconds=1.0, missing=frozenset({"gone.wav"}))


@pytest.mark.parametrize("text,files", [("0", 1), ("7", 1), ("15", 1), ("42", 2), ("40", 1), ("123", 4),
                                        ("1000", 2), ("2345", 6), ("1000000", 2)])
def test_say_number_pronounced_file_count(text, files):
    assert say_file_count("number", "pronounced", text) == files


def test_say_iterated_is_one_file_per_digit():
    assert say_file_count("number", "iterated", "1234") == 4


def test_route_expands_captures():
    route = Route(r"^(10)(\d\d)$", "bridge", "user/$1$2")
    assert route.match("1001", "public") == "user/1001"
    assert route.match("2001", "public") is None
    assert Route("^1", "park", context="default").match("1", "public") is None


def test_config_validation():
    with pytest.raises(ValueError):
        SimConfig(media_speed=0)
    with pytest.raises(ValueError):
        SimConfig(esl_host="0.0.0.0")
    with pytest.raises(ValueError):
        Press("12x")
