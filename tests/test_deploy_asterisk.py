"""Deploying a rendered Asterisk configuration: reload over ARI, proof it loaded, rollback.

Fast tests use a fake reload; the `slow` ones run a *private* Asterisk in the project's chroot
(tools/asterisk-setup.sh builds it; the `asterisk_chroot` fixture makes sure it exists): its own config
folder, run/log/spool folders and free loopback ports, so deploying broken configurations never
disturbs the shared Asterisk that other tests use (tests/private_asterisk.py).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchctl.config.site import Site, load_site
from switchctl.render.asterisk import (
    MARKER_VAR,
    asterisk_sound_files,
    render_asterisk,
    sounds_subdir,
)
from switchctl.render.asterisk_reload import asterisk_reloader, files_only_reload
from switchctl.render.deploy import DeployError, deploy
from tests.private_asterisk import (  # noqa: F401  (asterisk_chroot is a fixture)
    PrivateAsterisk,
    asterisk_chroot,
    create_private_asterisk,
    running_private_asterisk,
)

REPO = Path(__file__).resolve().parent.parent
PHONEBAR = REPO / "examples" / "phonebar"


def _site(folder: Path, *, ari_port: int = 8088, sip_port: int = 5060, conf_dir: Path | None = None,
          phones: str = '{range: "1001-1003", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
          name: str = "deploytest") -> Site:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.yaml").write_text(textwrap.dedent(f"""\
        site: {name}
        switches:
          - name: ast
            kind: asterisk
            ari: {{host: 127.0.0.1, port: {ari_port}, user: switchctl, password: switchctl, app: switchctl}}
            sip: {{ip: 127.0.0.1, port: {sip_port}}}
            conf_dir: {conf_dir or folder / 'conf'}
        flows: {PHONEBAR / 'dialplans'}
        sounds: [{PHONEBAR / 'sounds'}]
        phones:
          - {{extension: "1000", name: Operator, password: operator-1000}}
          - {phones}
        gateways:
          - {{name: upstream, proxy: 127.0.0.1:5090, register: false}}
        """))
    return load_site(folder / "site.yaml")


# ------------------------------------------------------------------------------------------ fast


async def test_rejected_reload_restores_the_previous_files(tmp_path: Path) -> None:
    site = _site(tmp_path / "site")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "asterisk.conf").write_text("[directories]\n")  # a default file deploy must leave alone
    replies = iter(["+OK [Success]\n", "-ERR pjsip endpoint '1000' is not loaded\n", "+OK [Success]\n"])

    async def reload() -> str:
        return next(replies)

    first = render_asterisk(site)
    result = await deploy(first, conf, reload)
    assert result.changed and "pjsip.conf" in result.written

    second = dict(first)
    second["pjsip.conf"] = first["pjsip.conf"] + b"\n[broken\n"
    with pytest.raises(DeployError, match="endpoint '1000' is not loaded") as err:
        await deploy(second, conf, reload)
    assert "and reloaded" in str(err.value)
    assert (conf / "pjsip.conf").read_bytes() == first["pjsip.conf"]
    assert (conf / "asterisk.conf").read_text() == "[directories]\n"


async def test_sound_files_deploy_into_the_site_folder(tmp_path: Path) -> None:
    site = _site(tmp_path / "site")
    sounds_root = tmp_path / "sounds"
    target = sounds_root / sounds_subdir(site)
    result = await deploy(asterisk_sound_files(site), target, files_only_reload)
    assert result.changed
    assert (target / "welcome.wav").read_bytes() == (PHONEBAR / "sounds" / "welcome.wav").read_bytes()
    assert not (target / "make_sounds.py").exists()
    again = await deploy(asterisk_sound_files(site), target, files_only_reload)
    assert not again.changed


# ------------------------------------------------------------------------------------------ private Asterisk


@pytest.fixture(scope="module")
def private_asterisk(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateAsterisk]:  # noqa: F811
    env = create_private_asterisk(asterisk_chroot, tag="deploy", log_dir=tmp_path_factory.mktemp("private-log"))
    site = _site(tmp_path_factory.mktemp("private-site"), ari_port=env.ari.port, sip_port=env.sip_port,
                 conf_dir=env.conf_dir)
    env.write_config(render_asterisk(site))  # the first config: a rendered one
    yield from running_private_asterisk(env)


def _private_site(env: PrivateAsterisk, folder: Path, **kw: str) -> Site:
    return _site(folder, ari_port=env.ari.port, sip_port=env.sip_port, conf_dir=env.conf_dir, **kw)


@pytest.mark.slow
async def test_deploy_reloads_and_asterisk_runs_the_new_phones(private_asterisk: PrivateAsterisk, tmp_path: Path) -> None:
    env = private_asterisk
    site = _private_site(env, tmp_path, phones='{range: "1001-1005", name: "Booth {n}", booth: true, password: "b-{extension}"}')
    files = render_asterisk(site)
    result = await deploy(files, env.conf_dir, asterisk_reloader(env.ari, env.conf_dir), force=True)
    assert result.reply.startswith("+OK [Success]"), result.reply
    assert "reloaded res_pjsip.so" in result.reply and "reloaded pbx_config.so" in result.reply

    endpoints = env.cli("pjsip show endpoints")
    for ext in ("1000", "1001", "1005", "upstream", "sipp"):
        assert f"Endpoint:  {ext} " in endpoints or f"Endpoint:  {ext}\n" in endpoints or f" {ext}/" in endpoints, endpoints
    dialplan = env.cli("dialplan show 9000@from-phones")
    assert "Stasis(switchctl,inbound,${EXTEN})" in dialplan, dialplan
    marker = env.ari_get(f"asterisk/variable?variable={MARKER_VAR}")
    assert isinstance(marker, dict) and marker["value"] in files["extensions.conf"].decode()
    modules = {m["name"]: m["status"] for m in env.ari_get("asterisk/modules")}  # type: ignore[union-attr]
    assert modules.get("cdr_custom.so") == "Running" and modules.get("res_pjsip_registrar.so") == "Running"

    # the same files again: nothing to do, Asterisk is not asked
    again = await deploy(files, env.conf_dir, asterisk_reloader(env.ari, env.conf_dir))
    assert not again.changed


@pytest.mark.slow
@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(("pjsip.conf", b"\n[broken\ntype = endpoint\n"), id="pjsip-syntax"),
        pytest.param(("pjsip.conf", b"\n[2000]\ntype = endpoint\nfrobnicate = yes\n"), id="pjsip-bad-option"),
        pytest.param(("extensions.conf", b"\n[broken\nexten => 1,1,NoOp()\n"), id="dialplan-syntax"),
        pytest.param(("modules.conf", b"load => res_no_such_module.so\n"), id="missing-module"),
    ],
)
async def test_a_broken_configuration_is_rolled_back(
    private_asterisk: PrivateAsterisk, tmp_path: Path, broken: tuple[str, bytes]
) -> None:
    env = private_asterisk
    good = render_asterisk(_private_site(env, tmp_path / "good"))
    await deploy(good, env.conf_dir, asterisk_reloader(env.ari, env.conf_dir), force=True)

    # a new phone (so the render differs) plus the breakage
    changed = render_asterisk(_private_site(
        env, tmp_path / "bad", phones='{range: "1001-1004", name: "Booth {n}", booth: true, password: "booth-{extension}"}'))
    rel, extra = broken
    changed[rel] = changed[rel] + extra
    with pytest.raises(DeployError) as err:
        await deploy(changed, env.conf_dir, asterisk_reloader(env.ari, env.conf_dir))
    assert "previous configuration restored and reloaded" in str(err.value), str(err.value)
    for name, content in good.items():
        assert (env.conf_dir / name).read_bytes() == content, name
    # Asterisk runs the good configuration: its fingerprint and no booth 1004
    marker = env.ari_get(f"asterisk/variable?variable={MARKER_VAR}")
    assert isinstance(marker, dict) and f"{MARKER_VAR} = {marker['value']}".encode() in good["extensions.conf"]
    assert "1004" not in env.cli("pjsip show endpoints")
