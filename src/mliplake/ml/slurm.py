"""Slurm for HPC users: a batch script for a command, ``sbatch`` to submit it, ``scontrol``/``sacct``
to follow it. Plain subprocess calls to the Slurm client tools of the login node; nothing here
knows about MACE or Dagster (``ml.slurm_script`` builds the training command, and the Dagster
code location follows the job through Pipes).
"""
from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
COMPLETED = "COMPLETED"


class SlurmError(RuntimeError):
    """Slurm refused the job or the job ended without completing; the message says which and where its log is."""


@dataclass
class SlurmOptions:
    partition: str = ""
    time: str = "04:00:00"
    gpus: int = 1
    cpus_per_task: int = 8
    mem: str = "32G"
    account: str = ""
    setup: str = ""  # shell lines before the command, e.g. "module load cuda; source venv/bin/activate"
    directives: list[str] = field(default_factory=list)  # any other sbatch options, e.g. ["--qos=high"]


def batch_script(command: Sequence[str], workdir: Path, name: str, opts: SlurmOptions,
                 env: Mapping[str, str] | None = None, log: str = "train.log") -> str:
    """A bash batch script that runs ``command`` in ``workdir`` and tees its output to ``workdir/log``.

    ``env`` is exported in the script itself rather than relying on sbatch's ``--export=ALL``,
    which sites often turn off.
    """
    d = [f"--job-name={name}", f"--time={opts.time}", f"--cpus-per-task={opts.cpus_per_task}",
         f"--mem={opts.mem}", f"--output={workdir}/slurm-%j.out"]
    if opts.gpus:
        d.append(f"--gpus={opts.gpus}")
    if opts.partition:
        d.append(f"--partition={opts.partition}")
    if opts.account:
        d.append(f"--account={opts.account}")
    d += opts.directives
    exports = [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return "\n".join([
        "#!/bin/bash", *(f"#SBATCH {x}" for x in d), "set -euo pipefail", opts.setup, *exports,
        f"cd {shlex.quote(str(workdir))}",
        f"{shlex.join(command)} 2>&1 | tee {shlex.quote(log)}",
        "",
    ])


def _run(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        raise SlurmError(f"{args[0]} not found: the Slurm client tools are not on PATH of this machine") from e
    if out.returncode != 0:
        raise SlurmError(f"{shlex.join(args)} failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def submit(script: Path) -> str:
    """``sbatch`` the script; returns the job id."""
    return _run(["sbatch", "--parsable", str(script)]).strip().split(";")[0]


def state(job_id: str) -> str:
    """The job's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``, ...).

    ``scontrol`` knows jobs until ``MinJobAge`` after they end; after that only accounting
    (``sacct``) does, where the site runs slurmdbd.
    """
    try:
        out = _run(["scontrol", "show", "job", "-o", job_id])
        for tok in out.split():
            if tok.startswith("JobState="):
                return tok.split("=", 1)[1]
    except SlurmError:
        pass
    out = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id]).split()
    if not out:
        raise SlurmError(f"Slurm job {job_id}: unknown to scontrol and sacct")
    return out[0].split()[0]


def cancel(job_id: str) -> None:
    _run(["scancel", job_id])


def wait(job_id: str, poll_seconds: float = 10.0, on_change: Callable[[str], None] | None = None) -> str:
    """Poll until the job has ended; returns its final state, calling ``on_change`` on each new state."""
    last = ""
    while True:
        s = state(job_id)
        if s != last and on_change:
            on_change(s)
        last = s
        if s not in PENDING | RUNNING:
            return s
        time.sleep(poll_seconds)
