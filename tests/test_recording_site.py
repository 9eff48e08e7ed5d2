"""The site's `recordings:` section: values, defaults and file:line:column errors."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from switchctl.config.site import load_site

from .test_site import ASTERISK, BASE, error_of, write_site


def test_recordings_section(tmp_path: Path) -> None:
    assert load_site(write_site(tmp_path, BASE)).recordings is None
    site = load_site(write_site(tmp_path, BASE + "recordings: {dir: /var/lib/freeswitch/recordings, local_dir: rec}\n"))
    rec = site.recordings
    assert rec is not None
    assert rec.dir == PurePosixPath("/var/lib/freeswitch/recordings")
    assert rec.local_dir == (tmp_path / "rec").resolve() and rec.format == "wav"


def test_recordings_errors(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "recordings: {local_dir: /x}\n")
    assert msg.startswith(f"{tmp_path / 'site.yaml'}:8:") or "site.yaml:8:" in msg
    assert "recordings needs 'dir'" in msg
    msg = error_of(tmp_path, BASE + "recordings: {dir: rec}\n")
    assert "site.yaml:8:19:" in msg and "recordings dir 'rec' must be absolute" in msg
    msg = error_of(tmp_path, BASE + "recordings: {dir: /rec, format: mp3}\n")
    assert "site.yaml:8:" in msg and "recordings format 'mp3' is not supported (one of: wav)" in msg
    msg = error_of(tmp_path, BASE + "recordings: {dir: /rec, folder: /x}\n")
    assert "unknown key 'folder' in recordings" in msg
    msg = error_of(tmp_path, BASE + "recordings: {dir: '/my recs'}\n")
    assert "must not contain spaces" in msg


def test_asterisk_recordings_must_be_under_its_recording_dir(tmp_path: Path) -> None:
    (tmp_path / "dialplans").mkdir(exist_ok=True)
    inside = ASTERISK + "recordings: {dir: /var/spool/asterisk/recording/calls}\n"
    assert str(load_site(write_site(tmp_path, inside)).recordings.dir) == "/var/spool/asterisk/recording/calls"
    msg = error_of(tmp_path, ASTERISK + "recordings: {dir: /var/spool/calls}\n")
    assert "site.yaml:8:19:" in msg
    assert ("recordings dir '/var/spool/calls' is not a folder under /var/spool/asterisk/recording, "
            "where Asterisk switch 'ast1' records") in msg
    msg = error_of(tmp_path, ASTERISK + "recordings: {dir: /var/spool/asterisk/recording}\n")
    assert "is not a folder under" in msg  # the recording dir itself: voicemail and others share it
    moved = ASTERISK.replace("    sip: {", "    recording_dir: /srv/ast/rec\n    sip: {")
    assert str(load_site(write_site(tmp_path, moved + "recordings: {dir: /srv/ast/rec/calls}\n")).recordings.dir) \
        == "/srv/ast/rec/calls"
