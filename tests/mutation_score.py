"""Print the kill rate of the last ``mutmut run``, per module and in all (run from the repo root).

A mutant counts as detected when a test failed (killed), hung (timeout) or crashed; the rate is
detected / checked, where "checked" leaves out mutants that were skipped or not run yet.
Mutants that no test reaches ("no tests") count as survivors: nothing would catch them.
The last line reads ``RESULT mutation_kill_rate: <rate> % (goal >= 80)``.

A full run takes hours on a few cores; a seeded uniform sample of all mutants gives an estimate
of the overall rate (with its binomial standard error) in a fraction of that:

    mutmut run "zzz*"                                       # generate mutants and map tests only
    mutmut run $(python tests/mutation_score.py --pick 200)  # 200 mutants drawn at random
    python tests/mutation_score.py
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
from collections import Counter, defaultdict

DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
UNCHECKED = {"skipped", "not checked", "check was interrupted by user"}


def module_of(mutant: str) -> str:
    """``lit_seqrl.data.windows.x_returns_to_go__mutmut_3`` -> ``lit_seqrl.data.windows``."""
    parts = mutant.split(".")
    first = next(i for i, p in enumerate(parts) if p.startswith("x"))
    return ".".join(parts[:first])


def results() -> list[tuple[str, str]]:
    """(mutant name, status) of every mutant mutmut has generated."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = [line.strip().rpartition(": ") for line in out.splitlines()]
    return [(name, status) for name, sep, status in pairs if sep and name]


def pick(n: int, seed: int) -> None:
    """Print ``n`` mutant names drawn uniformly at random from all of them, for ``mutmut run``."""
    names = sorted(name for name, _ in results())
    print("\n".join(random.Random(seed).sample(names, min(n, len(names)))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pick", type=int, default=0, help="print N mutant names drawn at random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.pick:
        pick(args.pick, args.seed)
        return
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in results():
        by_module[module_of(name)][status] += 1
    if not by_module:
        sys.exit("no mutation results: run `mutmut run` first")
    total: Counter[str] = Counter()
    print(f"{'module':<42} {'checked':>8} {'detected':>9} {'survived':>9} {'kill rate':>10}")
    for module, counts in sorted(by_module.items()):
        total.update(counts)
        checked = sum(n for s, n in counts.items() if s not in UNCHECKED)
        detected = sum(n for s, n in counts.items() if s in DETECTED)
        rate = 100 * detected / checked if checked else float("nan")
        print(f"{module:<42} {checked:>8} {detected:>9} {checked - detected:>9} {rate:>9.1f}%")
    checked = sum(n for s, n in total.items() if s not in UNCHECKED)
    detected = sum(n for s, n in total.items() if s in DETECTED)
    print("statuses:", dict(total))
    if total["timeout"]:
        # On a loaded machine a slow test run can look like a hang: rerun those to be sure.
        print(f"killed by a failing test only: {100 * total['killed'] / max(checked, 1):.1f} %")
    rate = detected / max(checked, 1)
    se = math.sqrt(rate * (1 - rate) / max(checked, 1))  # as an estimate from a sample of mutants
    print(f"RESULT mutation_kill_rate: {100 * rate:.1f} % ± {100 * se:.1f} (goal >= 80)")


if __name__ == "__main__":
    main()
