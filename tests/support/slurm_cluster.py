"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's
packages (``make test`` installs them), each started in the foreground under a temporary
folder with its own munge socket and free ports, so nothing on the machine is touched."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")


def available() -> str:
    """Empty when the cluster can start here, else why not."""
    missing = [b for b in BINARIES if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing; `make test` installs slurmd, slurmctld, munge)"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    def start(self, timeout: float = 30.0) -> dict[str, str]:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        sock = r / "munge" / "munge.socket"
        self._spawn([_sbin("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                     f"--seed-file={r / 'munge' / 'munged.seed'}"])
        self._until(sock.exists, timeout, "munged did not open its socket")
        node = socket.gethostname().split(".")[0]
        mem = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 2048)
        conf = r / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=mliplake-test", f"SlurmctldHost={node}(127.0.0.1)",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "ReturnToService=2", "MinJobAge=600",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {"SLURM_CONF": str(conf)}
        env = {**os.environ, **self.env}
        self._spawn([_sbin("slurmctld"), "-D", "-i"], env)
        self._spawn([_sbin("slurmd"), "-D", "-N", node], env)
        self._until(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                                     text=True).stdout, timeout, "the node did not come up idle")
        return self.env

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.stdout", "w")  # noqa: SIM115
        self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _until(self, ok, timeout: float, why: str) -> None:  # noqa: ANN001
        t0 = time.monotonic()
        while not ok():
            if time.monotonic() - t0 > timeout:
                logs = "\n".join(p.read_text()[-1500:] for p in (self.root / "log").glob("*"))
                self.stop()
                raise RuntimeError(f"local Slurm: {why}\n{logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()
