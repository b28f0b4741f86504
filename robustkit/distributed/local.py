"""A local cluster for tests and benchmarks: worker processes on 127.0.0.1, each with its own
``TF_CONFIG``, on free ports chosen at run time, bounded in time.

Example:

>>> import sys
>>> from robustkit.distributed.local import run_workers
>>> code = "import json, os; print(json.loads(os.environ['TF_CONFIG'])['task'])"
>>> runs = run_workers([sys.executable, "-c", code], workers=2, timeout=60)
>>> [r.returncode for r in runs], runs[1].stdout.strip()
([0, 0], "{'type': 'worker', 'index': 1}")
"""

import dataclasses
import os
import socket
import subprocess
import tempfile
import time

from robustkit.distributed.strategy import tf_config


def free_ports(n):
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclasses.dataclass
class WorkerRun:
    """One worker's outcome: ``returncode`` (``None``: still running at the deadline, then
    killed), its output and the cluster's wall time."""

    returncode: object
    stdout: str
    stderr: str
    seconds: float


def run_workers(argv, workers=2, timeout=600, env=None, extra_env=None, grace=60):
    """Runs ``argv`` as ``workers`` processes of one cluster and waits for all of them.

    Worker ``i`` gets ``TF_CONFIG`` for index ``i`` (on top of ``env``, default this
    process's, and ``extra_env[i]``). Once a worker has ended with an error the others get
    ``grace`` more seconds (they may wait in a collective for the dead peer); at ``timeout``
    seconds every process still running is killed. Every process started here has ended
    when this returns.
    """
    hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs, logs = [], []
    start = time.perf_counter()
    try:
        for i in range(workers):
            penv = dict(os.environ if env is None else env)
            penv["TF_CONFIG"] = tf_config(hosts, i)
            penv.update((extra_env or [{}] * workers)[i])
            out = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
            err = tempfile.TemporaryFile("w+")  # noqa: SIM115
            logs.append((out, err))
            procs.append(subprocess.Popen(argv, env=penv, stdout=out, stderr=err, text=True))
        deadline, failed_at = start + timeout, None
        while time.perf_counter() < deadline:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if failed_at is None and any(c not in (None, 0) for c in codes):
                failed_at = time.perf_counter()
            if failed_at is not None and time.perf_counter() - failed_at > grace:
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    runs = []
    for code, (out, err) in zip(codes, logs):
        out.seek(0)
        err.seek(0)
        runs.append(WorkerRun(code, out.read(), err.read(), seconds))
        out.close()
        err.close()
    return runs
