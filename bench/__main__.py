"""`python -m bench [NAME ...] [-- ARGS]`: run the benchmarks, each in its own process.

Without names every benchmark runs with its default sizes (the trie benchmark builds py-trie
tries of a million leaves side by side and takes minutes). Each prints its own figures and the
ratio against the reference it compares with; see the module docstrings for what they measure.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("matching", "sigs", "state_transition", "trie", "l1", "sequencer")


def main(argv: list[str]) -> int:
    names, _, extra = (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None, [])
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or BENCHMARKS:
        print(f"=== bench.bench_{name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.bench_{name}", *extra])
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
