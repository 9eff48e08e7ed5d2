"""Rating throughput: destination lookup + call cost on a generated 100,000-prefix table, one core.

    .venv/bin/python bench/rating.py [--prefixes 100000] [--seconds 3]

Prints ratings/s for plain prefixes and for a table where 10% of the prefixes have peak/off-peak
time bands, and compares the lookup alone against a digit trie (the alternative structure).
Deterministic inputs (fixed seed); each measurement stops after --seconds, so the whole run stays
well under 30 s. Target: >= 100,000 ratings/s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from switchctl.billing.money import Money, Rounding, currency  # noqa: E402
from switchctl.billing.rating import Rate, RateBook, RateRow, RateTable, TimeBand  # noqa: E402

EUR = currency("EUR")
TARGET = 100_000
BATCH = 10_000


def make_prefixes(rng: random.Random, count: int) -> list[str]:
    """E.164-like prefixes: a 1-3 digit country code followed by 1-6 more digits."""
    countries = sorted({str(rng.randint(1, 999)) for _ in range(220)})
    found: set[str] = set(countries)
    while len(found) < count:
        cc = rng.choice(countries)
        found.add(cc + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6))))
    return sorted(found)


def make_numbers(rng: random.Random, prefixes: list[str], count: int) -> list[str]:
    """Mostly numbers under a known prefix (11-15 digits); some 28-digit and some unmatched."""
    numbers = []
    for i in range(count):
        if i % 10 == 9:
            numbers.append("".join(rng.choice("0123456789") for _ in range(28)))
            continue
        base = rng.choice(prefixes)
        length = rng.randint(max(len(base) + 1, 11), 15)
        numbers.append(base + "".join(rng.choice("0123456789") for _ in range(length - len(base))))
    return numbers


def make_book(rng: random.Random, prefixes: list[str], banded_share: float) -> RateBook:
    peak = TimeBand.parse("mon-fri 08:00-20:00")
    rows = []
    for prefix in prefixes:
        per_minute = Money(rng.randint(1_000, 900_000), EUR)
        block = rng.choice([(60, 60), (30, 6), (1, 1)])
        rate = Rate(per_minute, Money(rng.choice([0, 50_000]), EUR), *block, 0, Rounding.UP)
        rows.append(RateRow("default", "default", prefix, "", rate))
        if rng.random() < banded_share:
            rows.append(RateRow("default", "default", prefix, "peak", Rate(per_minute * 2, rate.connect_fee,
                                                                           *block, 0, Rounding.UP), peak))
    return RateBook([RateTable.from_rows("default", "default", rows, timezone="Europe/Paris")])


def measure(work: Callable[[int], None], seconds: float) -> float:
    """Calls of `work(batch_start)` per second, BATCH at a time, until `seconds` have passed."""
    done, start = 0, time.perf_counter()
    while True:
        work(done)
        done += BATCH
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def trie_of(prefixes: list[str]) -> dict:
    root: dict = {}
    for prefix in prefixes:
        node = root
        for digit in prefix:
            node = node.setdefault(digit, {})
        node[""] = prefix  # "" marks the end of a prefix
    return root


def trie_find(root: dict, number: str) -> str | None:
    best, node = None, root
    for digit in number:
        node = node.get(digit)
        if node is None:
            break
        best = node.get("", best)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rng = random.Random(20240501)
    t0 = time.perf_counter()
    prefixes = make_prefixes(rng, args.prefixes)
    numbers = make_numbers(rng, prefixes, 50_000)
    durations = [rng.randint(0, 3600 * 1_000_000) for _ in range(len(numbers))]
    starts = [1_714_000_000_000_000 + rng.randint(0, 7 * 86_400) * 1_000_000 for _ in range(len(numbers))]
    plain = make_book(rng, prefixes, 0.0)
    banded = make_book(rng, prefixes, 0.10)
    print(f"setup: {len(prefixes)} prefixes, 2 books, {time.perf_counter() - t0:.1f} s")
    size = len(numbers)

    def rate_with(book: RateBook) -> Callable[[int], None]:
        find = book.find

        def work(offset: int) -> None:
            for i in range(offset % size, offset % size + BATCH):
                j = i % size
                found = find(numbers[j], at_us=starts[j])
                if found is not None:
                    found.rate.cost(durations[j])
        return work

    table = plain.table("default", "default")
    assert table is not None
    trie = trie_of(prefixes)
    for j in range(0, size, 97):  # both structures must agree before their speeds mean anything
        hit = table.find(numbers[j], 0)
        assert (hit.prefix if hit else None) == trie_find(trie, numbers[j])

    def dict_lookup(offset: int) -> None:
        for i in range(offset, offset + BATCH):
            table.find(numbers[i % size], 0)

    def trie_lookup(offset: int) -> None:
        for i in range(offset, offset + BATCH):
            trie_find(trie, numbers[i % size])

    plain_rate = measure(rate_with(plain), args.seconds)
    banded_rate = measure(rate_with(banded), args.seconds)
    dict_rate = measure(dict_lookup, args.seconds / 2)
    trie_rate = measure(trie_lookup, args.seconds / 2)
    print(f"ratings/s (lookup + cost), plain table:        {plain_rate:>10,.0f}")
    print(f"ratings/s (lookup + cost), 10% time-banded:    {banded_rate:>10,.0f}")
    print(f"lookups/s, dict probed by prefix length:       {dict_rate:>10,.0f}")
    print(f"lookups/s, digit trie (for comparison):        {trie_rate:>10,.0f}")
    ok = min(plain_rate, banded_rate) >= TARGET
    print(f"target >= {TARGET:,}/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
