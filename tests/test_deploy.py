"""Deploy: atomic install, backups, rollback when FreeSWITCH rejects the XML or is unreachable."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchctl.render.deploy import MANIFEST, DeployError, deploy, reload_accepted

# The exact bodies FreeSWITCH 1.11.1 answered to `api reloadxml` (captures/freeswitch-scenarios/s6_api).
OK = "+OK [Success]\n"
MALFORMED = "+OK [[error near line 6470]: unexpected closing tag </context>]\n"

V1 = {"freeswitch.xml": b"<document>1</document>\n", "dialplan/default/00_switchctl.xml": b"<include>1</include>\n",
      "directory/default/1001.xml": b"<include>u1001</include>\n"}
V2 = {"freeswitch.xml": b"<document>2</document>\n", "dialplan/default/00_switchctl.xml": b"<include>1</include>\n",
      "directory/default/1002.xml": b"<include>u1002</include>\n"}


def tree(conf_dir: Path) -> dict[str, bytes]:
    """Every file under conf_dir except deploy's manifest."""
    return {str(p.relative_to(conf_dir)): p.read_bytes() for p in conf_dir.rglob("*")
            if p.is_file() and p.name != MANIFEST}


class FakeSwitch:
    """Answers reloads from a script, recording what the conf_dir held at each reload."""

    def __init__(self, conf_dir: Path, *replies: str | Exception) -> None:
        self.conf_dir = conf_dir
        self.replies = list(replies)
        self.seen: list[dict[str, bytes]] = []

    async def reload(self) -> str:
        self.seen.append(tree(self.conf_dir))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def backups(conf_dir: Path) -> list[Path]:
    root = conf_dir.parent / ".switchctl-backups"
    return sorted(root.iterdir()) if root.exists() else []


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "freeswitch"


async def test_first_deploy_writes_everything(conf_dir: Path) -> None:
    switch = FakeSwitch(conf_dir, OK)
    result = await deploy(V1, conf_dir, switch.reload)
    assert result.changed and result.reply == OK
    assert set(result.written) == set(V1) and result.removed == ()
    assert tree(conf_dir) == V1 and switch.seen == [V1]
    assert result.backup is None  # nothing to back up yet
    assert "deployed 3 changed file(s)" in result.summary()


async def test_unchanged_tree_is_not_deployed_unless_forced(conf_dir: Path) -> None:
    await deploy(V1, conf_dir, FakeSwitch(conf_dir, OK).reload)
    switch = FakeSwitch(conf_dir)  # any reload would fail: no replies scripted
    result = await deploy(V1, conf_dir, switch.reload)
    assert not result.changed and switch.seen == []
    assert "nothing to deploy" in result.summary()
    forced = FakeSwitch(conf_dir, OK)
    result = await deploy(V1, conf_dir, forced.reload, force=True)
    assert result.changed and result.written == () and forced.seen == [V1]


async def test_update_replaces_changed_removes_stale_and_keeps_other_files(conf_dir: Path) -> None:
    await deploy(V1, conf_dir, FakeSwitch(conf_dir, OK).reload)
    (conf_dir / "autoload_configs").mkdir()
    (conf_dir / "autoload_configs" / "local.xml").write_bytes(b"<mine/>")  # not ours: left alone
    result = await deploy(V2, conf_dir, FakeSwitch(conf_dir, OK).reload)
    assert set(result.written) == {"freeswitch.xml", "directory/default/1002.xml"}
    assert result.removed == ("directory/default/1001.xml",)
    assert tree(conf_dir) == {**V2, "autoload_configs/local.xml": b"<mine/>"}
    # the backup holds the previous tree byte for byte
    assert result.backup is not None and tree(result.backup) == {**V1, "autoload_configs/local.xml": b"<mine/>"}
    assert not list(conf_dir.rglob("*.switchctl-new"))


async def test_rejected_xml_restores_previous_tree_and_reloads_it(conf_dir: Path) -> None:
    await deploy(V1, conf_dir, FakeSwitch(conf_dir, OK).reload)
    switch = FakeSwitch(conf_dir, MALFORMED, OK)
    with pytest.raises(DeployError) as info:
        await deploy(V2, conf_dir, switch.reload)
    assert "unexpected closing tag </context>" in str(info.value)
    assert info.value.reply == MALFORMED and info.value.restored
    assert switch.seen == [V2, V1]  # reloaded with the new tree, then with the restored one
    assert tree(conf_dir) == V1
    # the manifest was restored too: the next deploy of V2 again removes 1001
    result = await deploy(V2, conf_dir, FakeSwitch(conf_dir, OK).reload)
    assert result.removed == ("directory/default/1001.xml",)


async def test_rejected_first_deploy_leaves_nothing(conf_dir: Path) -> None:
    switch = FakeSwitch(conf_dir, MALFORMED, OK)
    with pytest.raises(DeployError):
        await deploy(V1, conf_dir, switch.reload)
    assert tree(conf_dir) == {}
    assert not (conf_dir / MANIFEST).exists()


async def test_dead_switch_restores(conf_dir: Path) -> None:
    await deploy(V1, conf_dir, FakeSwitch(conf_dir, OK).reload)
    switch = FakeSwitch(conf_dir, ConnectionRefusedError("127.0.0.1:8021"), ConnectionRefusedError("127.0.0.1:8021"))
    with pytest.raises(DeployError) as info:
        await deploy(V2, conf_dir, switch.reload)
    message = str(info.value)
    assert "reload failed (ConnectionRefusedError: 127.0.0.1:8021)" in message
    assert "reloading the previous configuration failed too" in message
    assert tree(conf_dir) == V1


async def test_backups_keep_the_last_five(conf_dir: Path) -> None:
    for i in range(8):
        files = {"freeswitch.xml": f"<document>{i}</document>\n".encode()}
        await deploy(files, conf_dir, FakeSwitch(conf_dir, OK).reload)
    kept = backups(conf_dir)
    assert len(kept) == 5
    # backups are named by time, so the newest one holds the tree before the last deploy
    assert (kept[-1] / "freeswitch.xml").read_bytes() == b"<document>6</document>\n"
    assert (kept[0] / "freeswitch.xml").read_bytes() == b"<document>2</document>\n"


async def test_paths_outside_conf_dir_are_refused(conf_dir: Path) -> None:
    for bad in ("../evil.xml", "/etc/passwd", "a/../../b", MANIFEST):
        with pytest.raises(ValueError):
            await deploy({bad: b"x"}, conf_dir, FakeSwitch(conf_dir, OK).reload)
    assert not conf_dir.exists()


def test_reload_accepted_reads_freeswitch_replies() -> None:
    assert reload_accepted(OK)
    assert not reload_accepted(MALFORMED)
    assert not reload_accepted("-ERR no reply\n")
    assert not reload_accepted("")
    assert not reload_accepted("+OK [Success]\n-ERR something else\n")
