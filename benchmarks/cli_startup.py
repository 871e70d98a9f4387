"""Start-up time of the light ``hrmkit`` commands (``--help``, ``cores``, ``data ... --help``) against the heavy
ones' floor (``import torch`` / ``import lightning``), in fresh interpreters.

Runs each command ``--repeats`` times, alternating commands within a round so machine load hits them alike, and
prints the median and best wall time per command with the load average, and the median CPU time (user + system of
the child process), which the shared machine's load inflates far less than wall time. ``hrmkit cores`` is measured
with a warm cache (its first run, which imports the cores, is reported separately as ``cores (cold cache)``).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
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


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HRMKIT_CACHE_DIR": cache}
        cold = timed(COMMANDS["hrmkit cores"], env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                times[name].append(timed(command, env))
    print(f"load average {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} (1 / 5 min), {os.cpu_count()} CPUs, "
          f"{args.repeats} rounds")
    print(f"{'command':<34} {'median wall s':>13} {'best wall s':>11} {'median CPU s':>12}")
    for name, values in times.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"{name:<34} {statistics.median(walls):>13.2f} {min(walls):>11.2f} {statistics.median(cpus):>12.2f}")
    print(f"{'hrmkit cores (cold cache)':<34} {cold[0]:>13.2f} {cold[0]:>11.2f} {cold[1]:>12.2f}")


if __name__ == "__main__":
    main()
