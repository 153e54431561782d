"""A Dagster Pipes client for Slurm: write the batch script, ``sbatch`` it, follow the job until it
ends. Context and messages travel as files in the job's work directory, which login and compute
nodes share, so the job's epoch lines reach the Dagster run while it trains."""
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from mliplake.ml import slurm


class PipesSlurmClient(dg.PipesClient):
    """Runs ``command`` as a Slurm batch job inside a Pipes session; raises if it does not complete."""

    def __init__(self, poll_seconds: float = 10.0) -> None:
        self.poll_seconds = poll_seconds

    def run(  # type: ignore[override]
        self, *, context: dg.AssetExecutionContext, command: Sequence[str], workdir: Path, name: str,
        options: slurm.SlurmOptions, extras: dict | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        with dg.open_pipes_session(
            context=context, extras=extras,
            context_injector=dg.PipesFileContextInjector(str(workdir / "pipes-context.json")),
            message_reader=dg.PipesFileMessageReader(str(workdir / "pipes-messages.jsonl")),
        ) as session:
            script = workdir / "job.sh"
            script.write_text(slurm.batch_script(command, workdir, name, options, session.get_bootstrap_env_vars()))
            job = slurm.submit(script)
            context.log.info(f"Slurm job {job} submitted: {script}")
            try:
                final = slurm.wait(job, self.poll_seconds, lambda s: context.log.info(f"Slurm job {job}: {s}"))
            except dg.DagsterExecutionInterruptedError:
                context.log.info(f"run interrupted: cancelling Slurm job {job}")
                slurm.cancel(job)
                raise
            if final != slurm.COMPLETED:
                raise slurm.SlurmError(f"Slurm job {job} ended {final}; its output is in {workdir}/slurm-{job}.out")
        return dg.PipesClientCompletedInvocation(session, metadata={"slurm_job_id": job})
