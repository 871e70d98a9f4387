"""Start-up time of the light ``hrmkit`` commands (``--help``, ``cores``, ``data ... --help``) against the heavy
ones' floor (``import torch`` / ``import lightning``), in fresh interpreters.

Runs each command ``--repeats`` times, alternating commands within a round so machine load hits them alike, and
prints the median and best wall time per command with the load average. ``hrmkit cores`` is measured with a warm
cache (its first run, which imports the cores, is reported separately as ``cores (cold cache)``).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "hrmkit --help": ["-m", "hrmkit.cli", "--help"],
    "hrmkit cores": ["-m", "hrmkit.cli", "cores"],
    "hrmkit data sudoku --help": ["-m", "hrmkit.cli", "data", "sudoku", "--help"],
    "hrmkit data text --help": ["-m", "hrmkit.cli", "data", "text", "--help"],
    "python -c 'import torch'": ["-c", "import torch"],
    "python -c 'import lightning'": ["-c", "import lightning"],
}


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HRMKIT_CACHE_DIR": cache}
        cold = timed(COMMANDS["hrmkit cores"], env)
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                times[name].append(timed(command, env))
    print(f"load average {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} (1 / 5 min), {os.cpu_count()} CPUs, "
          f"{args.repeats} rounds")
    print(f"{'command':<34} {'median s':>9} {'best s':>8}")
    for name, values in times.items():
        print(f"{name:<34} {statistics.median(values):>9.2f} {min(values):>8.2f}")
    print(f"{'hrmkit cores (cold cache)':<34} {cold:>9.2f} {cold:>8.2f}")


if __name__ == "__main__":
    main()
