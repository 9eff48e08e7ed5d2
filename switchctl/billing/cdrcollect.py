"""The CDR collector: imports the switches' own CDR files and bills prepaid calls from them, once.

A prepaid call is billed live (the prepaid feature commits when the dial ends) or, if the controller
was not there when it ended, from the switch's CDR of the leg the dial created. Both paths commit
the same reservation (`callkeys.reservation_ref(switch, <caller leg uuid>)`) under the same
idempotency key (`callkeys.commit_key`), so whichever comes second is a ledger replay.

For every record read:
- it is stored by `CdrStore` (one row per leg, idempotent), rated with the rate chain of the
  account that holds the call's reservation (tenant and class), else the collector's defaults;
- a record carrying `switchctl_call` (`Cdr.prepaid_call`, set on every leg a prepaid dial creates)
  that was answered and rated commits that cost to the reservation. The cost is the stored row's,
  so a re-import commits the very same amount even if the rates changed in between;
- the caller's leg (FreeSWITCH leg "a") of a call that never bridged (no peer) releases its
  reservation if it is still live: the caller is gone and nothing was answered. A caller leg that
  did bridge leaves it to the answered leg's record (which may be read later, in another file);
- a record carrying `switchctl_recording` (`Cdr.recording`, set by the recording feature) keeps
  that file in `call_recordings` if the live path did not (a controller killed mid-call), and a
  recording that ended with the call takes the record's end time (the switch's clock);
- a reservation already released, committed with another amount, or missing is a problem of that
  call only: logged once, counted, and the import goes on. A line that does not parse is logged as
  `file:line: message` and skipped (CdrStore.import_file).

Files, and why nothing is lost:
- line files (mod_cdr_csv Master.csv, Asterisk cdr-custom/switchctl.csv, Master.csv): `CdrStore`
  keeps the byte offset per file and saves it only after every record before it was stored AND
  settled (`import_file(keep=...)`), so a crash re-reads a few records, which are replays;
- mod_json_cdr folders (one file per leg): each file is moved to `done/` only after its record was
  stored and settled; a file that does not parse is moved to `bad/` (logged), one that is still
  being written (no closing brace yet) is left for the next round. A folder holds only what is left
  to do, so a round costs one directory listing, and `cdr_files` does not grow a row per call.

Asterisk: the prepaid variables reach cdr_custom only as CDR variables (`CDR(switchctl_call)`, read
with the `(uservar)` field qualifier); see docs/CDR.md. No automatic release there: one Asterisk
channel writes several rows (one per dial attempt), so a row without a peer does not prove that
the caller never got through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from switchctl.billing.accounts import Accounts
from switchctl.billing.callkeys import commit_key, release_key, reservation_ref
from switchctl.billing.cdr import (
    AstCustomFormat,
    AstMasterFormat,
    Cdr,
    CdrError,
    CdrFormat,
    FsCsvFormat,
    FsJsonFormat,
)
from switchctl.billing.cdrstore import CdrStore, Recorded
from switchctl.billing.ledger import (
    COMMITTED,
    LIVE,
    CallRef,
    IdempotencyConflict,
    Ledger,
    LedgerError,
    NoReservation,
    ReservationClosed,
)
from switchctl.billing.money import CurrencyMismatch
from switchctl.billing.rating import DEFAULT, RateBook
from switchctl.store.recording_models import RecordingLog

log = logging.getLogger(__name__)

JSON_SUFFIX = ".cdr.json"  # mod_json_cdr: <log-dir>/[a_]<uuid>.cdr.json
DONE_DIR = "done"
BAD_DIR = "bad"
MAX_JSON_BYTES = 1024 * 1024  # a leg's JSON CDR is ~10 KiB; a bigger file is not one
SETTLE_S = 3.0  # a JSON CDR younger than this is left for the next round (see _import_folder)
STALE_PARTIAL_S = 60.0  # a JSON file still incomplete after this long was abandoned by its writer
_CHUNK = 4 * 1024 * 1024  # bytes of a line file per import_file call
AST_CUSTOM_FILE = "switchctl.csv"  # render/asterisk.py CDR_CUSTOM_FILE (a test keeps them equal)


@dataclass(frozen=True, slots=True)
class CdrSource:
    """Where one switch's CDRs are: a mod_json_cdr folder, or a file of one record per line."""

    switch: str
    path: Path
    format: CdrFormat

    @property
    def is_folder(self) -> bool:
        return self.format.whole_file

    @classmethod
    def freeswitch_json(cls, switch: str, folder: str | os.PathLike[str]) -> CdrSource:
        """mod_json_cdr's log-dir (render default: `$${log_dir}/json_cdr`)."""
        return cls(switch, Path(folder), FsJsonFormat(switch))

    @classmethod
    def freeswitch_csv(cls, switch: str, master_csv: str | os.PathLike[str]) -> CdrSource:
        """mod_cdr_csv's `<log-base>/cdr-csv/Master.csv` (switchctl's template)."""
        return cls(switch, Path(master_csv), FsCsvFormat(switch))

    @classmethod
    def asterisk_custom(cls, switch: str, log_dir: str | os.PathLike[str]) -> CdrSource:
        """Asterisk's `<astlogdir>/cdr-custom/switchctl.csv` (µs; in the chroot's log dir)."""
        return cls(switch, Path(log_dir) / "cdr-custom" / AST_CUSTOM_FILE, AstCustomFormat(switch))

    @classmethod
    def asterisk_master(cls, switch: str, log_dir: str | os.PathLike[str]) -> CdrSource:
        """Asterisk's `<astlogdir>/cdr-csv/Master.csv` (whole seconds: a fallback)."""
        return cls(switch, Path(log_dir) / "cdr-csv" / "Master.csv", AstMasterFormat(switch))


@dataclass
class CollectReport:
    """What one `catch_up` did."""

    records: int = 0  # records read (new or not)
    created: int = 0  # legs stored for the first time
    committed: int = 0  # reservations committed from a CDR now
    replayed: int = 0  # commits already done (the live path, or an earlier import): nothing written
    released: int = 0  # reservations of calls that never got through
    files_done: int = 0  # JSON files moved to done/
    recordings: int = 0  # recording paths only a CDR knew (kept now)
    errors: list[str] = field(default_factory=list)  # unreadable records (`file:line: message`)
    problems: list[str] = field(default_factory=list)  # calls the ledger refused (logged once)


class CdrCollector:
    """Imports `sources` into `cdrs` and settles prepaid reservations in `ledger`.

    `await catch_up()` at controller start (imports everything new), then `await run(stop)` polls.
    `rate_book()` is called once per round, so a rate change applies from the next round on.
    """

    def __init__(self, sources: Sequence[CdrSource], cdrs: CdrStore, ledger: Ledger,
                 accounts: Accounts, rate_book: Callable[[], RateBook], *,
                 tenant: str = DEFAULT, account_class: str = DEFAULT,
                 max_files_per_round: int = 1000, max_bytes_per_round: int = 16 * 1024 * 1024,
                 settle_seconds: float = SETTLE_S, clock: Callable[[], float] = time.time) -> None:
        self.sources = tuple(sources)
        self.cdrs = cdrs
        self.ledger = ledger
        self.accounts = accounts
        self.rate_book = rate_book
        self.tenant = tenant
        self.account_class = account_class
        self.max_files_per_round = max_files_per_round
        self.max_bytes_per_round = max_bytes_per_round
        self.clock = clock
        self.settle_seconds = settle_seconds
        self._lock = asyncio.Lock()
        self._reported: set[str] = set()  # problems already logged (log once)
        self.recordings = RecordingLog(cdrs.store, lambda: int(self.clock() * 1_000_000))

    # -- rounds -----------------------------------------------------------------------------------
    async def catch_up(self) -> CollectReport:
        """Import what every source gained since the last round, and settle it. A database error
        propagates (nothing after the failing record is marked done: the next round redoes it)."""
        async with self._lock:
            report = CollectReport()
            book = self.rate_book()
            for source in self.sources:
                if source.is_folder:
                    await self._import_folder(source, book, report)
                else:
                    await self._import_lines(source, book, report)
            return report

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Poll every `interval` seconds until `stop` is set. A failed round (database down, a
        folder unreadable) is logged and retried on the next one; the loop never ends on its own."""
        while not stop.is_set():
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("CDR import round failed; retrying in %.1f s", interval)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    # -- sources ----------------------------------------------------------------------------------
    async def _import_lines(self, source: CdrSource, book: RateBook, report: CollectReport) -> None:
        if not source.path.is_file():
            self._problem(f"missing:{source.path}", f"CDR file {source.path} does not exist (yet)",
                          report, level=logging.INFO, counted=False)
            return
        budget = self.max_bytes_per_round
        while budget > 0:  # bounded work per round; the rest is read on the next one
            chunk = min(budget, _CHUNK)
            done = await self.cdrs.import_file(source.path, source.format, max_bytes=chunk,
                                               keep=lambda cdr: self._keep(cdr, book, report))
            report.errors.extend(done.errors)
            if done.pending_bytes or done.offset >= source.path.stat().st_size:
                return
            budget -= chunk

    async def _import_folder(self, source: CdrSource, book: RateBook, report: CollectReport) -> None:
        folder = source.path
        if not folder.is_dir():
            self._problem(f"missing:{folder}", f"CDR folder {folder} does not exist (yet)", report,
                          level=logging.INFO, counted=False)
            return
        names = sorted(e.name for e in os.scandir(folder)
                       if e.name.endswith(JSON_SUFFIX) and e.is_file())[:self.max_files_per_round]
        for name in names:
            path = folder / name
            try:
                # a bounded local read (≤ 1 MiB), like CdrStore's: not worth a thread (the rules allow none)
                with open(path, "rb") as handle:  # noqa: ASYNC230
                    data = handle.read(MAX_JSON_BYTES + 1)
                    age = self.clock() - os.fstat(handle.fileno()).st_mtime
            except FileNotFoundError:  # moved by another collector meanwhile
                continue
            if age < self.settle_seconds:
                # Written this instant: the controller that ran the call commits it live within
                # milliseconds of its end, with the amount only it knows (a cut by our own timer
                # bills the paid time). Reading the file first would race it; next round.
                continue
            text = data.decode("utf-8", errors="replace")
            try:
                if len(data) > MAX_JSON_BYTES:
                    raise CdrError(f"{path}: larger than {MAX_JSON_BYTES} bytes, not a leg's JSON CDR")
                cdr = source.format.parse(text, str(path))
            except CdrError as exc:
                if not text.rstrip().endswith("}") and age < STALE_PARTIAL_S:
                    continue  # FreeSWITCH is still writing it: next round
                log.warning("%s (moved to %s/)", exc, BAD_DIR)
                report.errors.append(str(exc))
                _move(path, folder / BAD_DIR)
                continue
            await self._keep(cdr, book, report)
            _move(path, folder / DONE_DIR)  # only now: the record is stored and settled
            report.files_done += 1

    # -- one record -------------------------------------------------------------------------------
    async def _keep(self, cdr: Cdr, book: RateBook, report: CollectReport) -> Recorded:
        report.records += 1
        ref = reservation_ref(cdr.switch, cdr.prepaid_call) if cdr.prepaid_call else None
        tenant, account_class = self.tenant, self.account_class
        reservation = await self.ledger.reservation(ref) if ref else None
        if ref is not None and reservation is None:
            self._problem(f"nores:{ref}", f"CDR {cdr.switch}/{cdr.call_uuid}/{cdr.leg}: prepaid call "
                          f"{ref} has no reservation in the ledger; stored, not billed", report)
        if reservation is not None:
            account = await self.accounts.get(reservation.account_id)
            tenant, account_class = account.tenant, account.account_class
        recorded = await self.cdrs.record(cdr, book, tenant=tenant, account_class=account_class)
        if recorded.created:
            report.created += 1
        if cdr.recording:
            if await self.recordings.from_cdr(cdr.switch, cdr.call_uuid, cdr.recording,
                                              start_us=cdr.answer_us or cdr.start_us, end_us=cdr.end_us):
                report.recordings += 1
                log.info("recording %s of call %s kept from its CDR", cdr.recording, cdr.call_uuid)
        # Only the leg kind that carries the charge (FreeSWITCH: the dialled "b" leg; Asterisk:
        # the caller's row, which holds the bridge) bills: a caller leg that also carries
        # switchctl_call is never billed for its own (IVR) time.
        billed = cdr.leg in self.cdrs.billed_legs.get(cdr.switch_kind, frozenset())
        if ref is not None and reservation is not None and cdr.answered and billed:
            if reservation.state == COMMITTED:
                # The live path billed it already; its amount is the truth (it knows whether our
                # cutoff ended the call: the paid time is billed, never our cut's last ms).
                report.replayed += 1
                log.debug("prepaid call %s was billed live; its CDR only stored", ref)
            else:
                await self._commit(ref, recorded, report)
        elif cdr.switch_kind == "freeswitch" and cdr.leg == "a" and cdr.peer is None:
            await self._release_unbridged(cdr, report)
        return recorded

    async def _commit(self, ref: CallRef, recorded: Recorded, report: CollectReport) -> None:
        stored = recorded.stored
        if stored.cost is None:
            self._problem(f"unrated:{ref}", f"prepaid call {ref}: answered leg "
                          f"{stored.cdr.call_uuid} is not rated ({stored.unrated_reason}); the "
                          f"reservation is left for an operator", report)
            return
        try:
            entry = await self.ledger.commit(ref, stored.cost, commit_key(ref))
        except IdempotencyConflict as exc:
            self._problem(f"conflict:{ref}", f"prepaid call {ref}: already committed with another "
                          f"amount than the CDR's {stored.cost} ({exc}); not billed again", report)
            return
        except ReservationClosed:
            self._problem(f"closed:{ref}", f"prepaid call {ref}: its reservation was released, "
                          f"but leg {stored.cdr.call_uuid} was answered ({stored.cost}); "
                          f"not billed: check the call", report)
            return
        except (NoReservation, LedgerError, CurrencyMismatch, ValueError) as exc:
            self._problem(f"commit:{ref}", f"prepaid call {ref}: commit of {stored.cost} refused: "
                          f"{exc}", report)
            return
        if entry.replayed:
            report.replayed += 1
        else:
            report.committed += 1
            log.info("prepaid call %s billed %s from its CDR (leg %s)", ref, stored.cost,
                     stored.cdr.call_uuid)

    async def _release_unbridged(self, cdr: Cdr, report: CollectReport) -> None:
        ref = reservation_ref(cdr.switch, cdr.call_uuid)
        reservation = await self.ledger.reservation(ref)
        if reservation is None or reservation.state != LIVE:
            return
        try:
            entry = await self.ledger.release(ref, release_key(ref))
        except (ReservationClosed, IdempotencyConflict, NoReservation) as exc:
            # the live path closed it meanwhile (commit or release): nothing to do
            log.debug("prepaid call %s: not released from its CDR: %s", ref, exc)
            return
        if not entry.replayed:
            report.released += 1
            log.info("prepaid call %s released: the caller hung up without being connected", ref)

    def _problem(self, key: str, message: str, report: CollectReport, *,
                 level: int = logging.WARNING, counted: bool = True) -> None:
        if counted:
            report.problems.append(message)
        if key not in self._reported:
            self._reported.add(key)
            log.log(level, "%s", message)


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    try:
        os.replace(path, folder / path.name)
    except FileNotFoundError:  # another collector moved it first
        pass
