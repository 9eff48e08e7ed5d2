"""`switchctl rates …` and `switchctl booth …` run in-process on a temporary site, on SQLite and on
a throwaway PostgreSQL database (tests/pg_fixture.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchctl import cli
from switchctl.billing import callkeys
from switchctl.billing.accounts import Accounts
from switchctl.billing.ledger import Ledger
from switchctl.billing.money import Money, currency
from switchctl.config.site import load_site
from switchctl.store import Store
from tests.pg_fixture import BACKENDS, fresh_pg_url

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"
EUR = currency("EUR")

RATES = """\
prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment,time_band
33,France,EUR,0.02,,60,60,
336,France mobile,EUR,0.05,,30,6,
336,France mobile peak,EUR,0.10,,30,6,mon-fri 08:00-20:00
"""


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    database = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else fresh_pg_url()
    lines = [
        "site: clitest",
        "switches:",
        "  - name: fs1",
        "    kind: freeswitch",
        "    esl: {host: 127.0.0.1, port: 18021, password: ClueCon}",
        "    outbound: {host: 127.0.0.1, port: 18084}",
        "    sip: {ip: 127.0.0.1, port: 15060}",
        f"    conf_dir: {tmp_path / 'conf'}",
        f"flows: {EXAMPLE / 'dialplans'}",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        '  - {range: "1001-1003", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
        f"database: {database}",
    ]
    path = tmp_path / "site.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rates_import_show_rate_export(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rates = tmp_path / "fr.csv"
    rates.write_text(RATES)
    code, out, err = run(capsys, "rates", "import", "-c", str(site), str(rates), "--class", "vip",
                         "--timezone", "Europe/Paris")
    assert code == 0, err
    assert f"imported {rates} as rate table (default, vip) version 1 (replace): 3 rows, 2 prefixes, EUR, Europe/Paris" in out

    bad = tmp_path / "bad.csv"
    bad.write_text(RATES + "3x,Oops,EUR,0.1,,60,60,\n")
    code, out, err = run(capsys, "rates", "import", "-c", str(site), str(bad), "--class", "vip")
    assert code == 1 and err == f"{bad}:5: prefix '3x' must be digits only (no '+', spaces or letters)\n"

    code, out, _ = run(capsys, "rates", "show", "-c", str(site))
    assert code == 0 and "(default, vip)" in out and "* v1" in out and "3 rows" in out and str(rates) in out

    # Monday 2026-03-02 10:00 Paris is peak: 65 s on 30/6 bills 66 s at 0.10/min = 0.11 (rounded up).
    code, out, err = run(capsys, "rates", "rate", "-c", str(site), "+33612345678", "--class", "vip",
                         "--seconds", "65", "--at", "2026-03-02T10:00+01:00")
    assert code == 0, err
    assert "prefix 336 (France mobile peak) from table (default, vip), time band 'mon-fri 08:00-20:00'" in out
    assert "65 s answered: billed 66 s, costs 0.11 EUR" in out
    code, _, err = run(capsys, "rates", "rate", "-c", str(site), "4420", "--class", "vip")
    assert code == 1 and "no rate for 4420" in err
    code, _, err = run(capsys, "rates", "rate", "-c", str(site), "33", "--class", "vip", "--seconds", "1.5e3")
    assert code == 1 and "not a number of seconds" in err

    out_file = tmp_path / "out.csv"
    code, _, _ = run(capsys, "rates", "export", "-c", str(site), "--class", "vip", "-o", str(out_file))
    assert code == 0
    exported = out_file.read_text()
    assert exported.splitlines()[1] == "default,vip,33,France,EUR,0.02,0.00,60,60,0,up,,Europe/Paris"
    # Re-import the export: a second version, identical export.
    assert run(capsys, "rates", "import", "-c", str(site), str(out_file), "--class", "vip")[0] == 0
    code, out, _ = run(capsys, "rates", "export", "-c", str(site), "--class", "vip")
    assert code == 0 and out == exported
    code, _, err = run(capsys, "rates", "export", "-c", str(site), "--class", "gold")
    assert code == 1 and "no rate table (default, gold)" in err


def commit_a_call(site_path: Path, booth: str, uuid: str, cost: str) -> None:
    """What the prepaid service does for one answered call: reserve, then commit the rated cost."""

    async def go() -> None:
        store = Store.open(load_site(site_path).database_url)
        try:
            accounts, ledger = Accounts(store, lambda: 1), Ledger(store, lambda: 1)
            acct = await accounts.named(booth)
            ref = callkeys.reservation_ref("fs1", uuid)
            await ledger.reserve(acct.id, ref, Money.parse("1", EUR), f"{ref}:reserve:0")
            await ledger.commit(ref, Money.parse(cost, EUR), callkeys.commit_key(ref))
        finally:
            await store.close()

    asyncio.run(go())


def test_booth_open_bill_list_collect(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "booth", "open", "-c", str(site), "1001", "--deposit", "5")
    assert code == 0 and out == "booth 1001: session open, deposit 5.00 EUR\n", err
    commit_a_call(site, "1001", "call-1", "0.65")
    commit_a_call(site, "1001", "call-2", "0.07")

    code, out, _ = run(capsys, "booth", "bill", "-c", str(site), "1001")
    assert code == 0 and "(details pending)" in out and "total       0.72 EUR" in out
    assert "give       4.28 EUR back" in out
    code, out, _ = run(capsys, "booth", "list", "-c", str(site))
    assert code == 0 and out.startswith("1001 ") and "2 call(s)" in out and "due     -4.28 EUR" in out

    code, _, err = run(capsys, "booth", "collect", "-c", str(site), "1001", "--paid", "1")
    assert code == 1 and "nothing is due (4.28 EUR of the deposit goes back), but 1.00 EUR was paid" in err
    code, out, _ = run(capsys, "booth", "collect", "-c", str(site), "1001")
    assert code == 0 and out.endswith("give back 4.28 EUR; booth 1001 is free\n")
    code, _, err = run(capsys, "booth", "collect", "-c", str(site), "1001")
    assert code == 1 and "nothing to collect; its last session (1) was collected" in err
    code, out, _ = run(capsys, "booth", "list", "-c", str(site))
    assert code == 0 and out == "no open booth sessions\n"
    code, out, _ = run(capsys, "account", "show", "-c", str(site), "1001")
    assert "balance 0.00, held 0.00, available 0.00 EUR" in out

    # A float booth: the customer pays what is due, exactly.
    assert run(capsys, "account", "create", "-c", str(site), "1002", "--kind", "booth")[0] == 0
    assert run(capsys, "account", "topup", "-c", str(site), "1002", "20")[0] == 0
    commit_a_call(site, "1002", "call-3", "1.30")
    code, _, err = run(capsys, "booth", "collect", "-c", str(site), "1002", "--paid", "1.00")
    assert code == 1 and "1.30 EUR is due but 1.00 EUR was paid" in err
    code, out, _ = run(capsys, "booth", "collect", "-c", str(site), "1002", "--paid", "1.30")
    assert code == 0 and out.endswith("collected 1.30 EUR; booth 1002 is free\n")

    code, _, err = run(capsys, "booth", "bill", "-c", str(site), "1000")
    assert code == 1 and "'1000' is not a booth of the site (booth phones: 1001, 1002, 1003)" in err
