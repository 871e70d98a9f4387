"""Run ``hrmkit`` commands as fresh processes without paying the import of torch and Lightning each time.

A ``forkserver`` imports hrmkit, Lightning and torch once (and runs no torch work, so no thread pool is forked); each
run is a process forked from it that calls :func:`hrmkit.cli.main`, so a SIGKILL is a real kill of a real process.
A run of ``devices`` processes is launched as torchrun would: one forked process per rank with ``LOCAL_RANK``,
``WORLD_SIZE`` and the rendezvous address set, so Lightning joins them (gloo) instead of re-executing pytest.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["hrmkit.cli", "hrmkit.tasks", "hrmkit.data", "hrmkit.data.text", "hrmkit.callbacks", "hrmkit.parallel",
           "hrmkit.checkpointing", "lightning.pytorch", "lightning.pytorch.cli", "litdata", "_kill_switch",
           "torch.distributed.checkpoint"]
_CTX: multiprocessing.context.ForkServerContext | None = None


def _context() -> multiprocessing.context.ForkServerContext:
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def _child(argv: list[str], cwd: str, log: str, env: dict[str, str], timeout: float) -> None:
    os.setpgid(0, 0)  # its own process group: the run's data workers are killed with it
    # A forkserver child inherits the forkserver start method, so each DataLoader worker would be a fresh process
    # importing torch; `hrmkit fit` from a shell forks its workers (Python's default on Linux), and so does this.
    multiprocessing.set_start_method("fork", force=True)
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    faulthandler.dump_traceback_later(max(1.0, timeout - 2), exit=False)  # where a stuck rank waits, in the log
    import torch

    torch.set_num_threads(1)
    from hrmkit.cli import main

    main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: nothing of the run is left to flush, and exit hooks could block


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    """The exit codes of a finished run (one per rank), its log (all ranks, interleaved), its CPU seconds (all
    ranks, sampled until each exits) and its wall seconds."""

    codes: list[int | None]
    log: str
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def tail(self, n: int = 4000) -> str:
        return f"exit codes {self.codes}\n{self.log[-n:]}"


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(argv: list[str], cwd: Path, log: Path, devices: int = 1, timeout: float | None = None) -> Run:
    """``hrmkit <argv>`` in ``cwd`` on ``devices`` processes; waits for every rank (killing stragglers after
    ``timeout`` seconds, default ``$HRMKIT_RUN_TIMEOUT`` or 600: a rank that died leaves its peers blocked in a
    collective)."""
    timeout = float(timeout if timeout is not None else os.environ.get("HRMKIT_RUN_TIMEOUT", 600))
    ctx = _context()
    base = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "LITDATA_DISABLE_VERSION_CHECK": "1"}
    if devices > 1:
        base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(devices), NODE_RANK="0")
    procs, cpu = [], {}
    start = time.monotonic()
    try:
        for rank in range(devices):
            env = dict(base, LOCAL_RANK=str(rank)) if devices > 1 else base
            p = ctx.Process(target=_child, args=(list(argv), str(cwd), str(log), env, timeout))
            p.start()
            procs.append(p)
        while any(p.is_alive() for p in procs) and time.monotonic() - start < timeout:
            for p in procs:
                used = _cpu_seconds(p.pid) if p.is_alive() else None
                if used is not None:
                    cpu[p.pid] = used
            time.sleep(0.1)
    finally:  # a timeout, or an interrupted test: no rank may outlive the run, nor any process a rank started
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join()
            try:  # a SIGKILLed rank leaves its DataLoader workers and their forkserver behind otherwise
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    text = log.read_text() if log.is_file() else ""
    return Run([p.exitcode for p in procs], text, sum(cpu.values()), time.monotonic() - start)


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/_recipe_runner.py DIR fit -c ...
    print(run(sys.argv[2:], Path.cwd(), Path(sys.argv[1])).tail())
