"""Builder routing: share of targets that change builder when the pool grows, rendezvous vs modulo hashing.

Run: .venv/bin/python benchmarks/routing.py [--keys 10000]
For N = 4..10 builders, adds builder N and reports, side by side in one run: the fraction of keys whose
builder changed (ideal: 1/(N+1)) for rendezvous (HRW, what BuilderPool uses) and for `hash % N`, the
load imbalance (busiest builder / mean) and the time per routing decision.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections import Counter

from resources.builders.pool import rendezvous_order


def modulo_choice(key: str, members: list[str]) -> str:
    """Naive hashing: blake2b(key) mod N."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return members[h % len(members)]


def hrw_choice(key: str, members: list[str]) -> str:
    return rendezvous_order(key, members)[0]


def moved(choose, keys: list[str], before: list[str], after: list[str]) -> float:
    return sum(1 for k in keys if choose(k, before) != choose(k, after)) / len(keys)


def imbalance(choose, keys: list[str], members: list[str]) -> float:
    counts = Counter(choose(k, members) for k in keys)
    return max(counts.values()) / (len(keys) / len(members))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    keys = [f"github.com/org/repo-{i}:services/svc-{i % 13}" for i in range(args.keys)]
    print(f"{args.keys} keys; columns: fraction of keys that change builder when builder N+1 joins")
    print(f"{'N':>3} {'ideal 1/(N+1)':>14} {'rendezvous':>11} {'modulo':>8} {'modulo/rendezvous':>18} "
          f"{'HRW imbalance':>14} {'HRW us/route':>13}")
    for n in range(4, 11):
        before = [f"buildkitd-{i}" for i in range(n)]
        after = [*before, f"buildkitd-{n}"]
        hrw = moved(hrw_choice, keys, before, after)
        mod = moved(modulo_choice, keys, before, after)
        started = time.perf_counter()
        for k in keys:
            hrw_choice(k, after)
        per_route_us = (time.perf_counter() - started) / len(keys) * 1e6
        print(f"{n:>3} {1 / (n + 1):>14.4f} {hrw:>11.4f} {mod:>8.4f} {mod / hrw:>18.1f} "
              f"{imbalance(hrw_choice, keys, after):>14.3f} {per_route_us:>13.1f}")


if __name__ == "__main__":
    main()
