"""Resources configured from the environment, so the same code runs on a folder or on S3."""

import os
from pathlib import Path

import dagster as dg

import mliplake
from mliplake.ml.slurm import SlurmOptions
from mliplake.settings import Settings

DEFAULT_LAKE = str(Path(__file__).resolve().parents[2] / "lake")


class LakeResource(dg.ConfigurableResource):
    """The lake: a local folder or ``s3://bucket/prefix`` (credentials and endpoint from the AWS variables)."""

    url: str

    def lake(self) -> mliplake.Lake:
        return mliplake.Lake(self.url)


class SearchResource(dg.ConfigurableResource):
    """OpenSearch (``$MLIPLAKE_OPENSEARCH_URL``); empty: the embedded engine, DuckDB over the lake."""

    url: str = ""

    def client(self):  # noqa: ANN201
        from mliplake import search

        return search.connect(self.url)


class TrainerResource(dg.ConfigurableResource):
    """Where models train: ``local`` (a subprocess on this machine) or ``slurm`` (a batch job submitted
    from this machine and followed through Dagster Pipes; the work directory, ``$MLIPLAKE_WORKDIR``,
    must be on a filesystem the compute nodes share). Set from ``MLIPLAKE_TRAINER`` and ``MLIPLAKE_SLURM_*``."""

    launcher: str = "local"
    partition: str = SlurmOptions.partition
    account: str = SlurmOptions.account
    time: str = SlurmOptions.time
    gpus: int = SlurmOptions.gpus
    cpus_per_task: int = SlurmOptions.cpus_per_task
    mem: str = SlurmOptions.mem
    setup: str = SlurmOptions.setup  # shell lines the job runs first, e.g. "module load cuda; source venv/bin/activate"
    poll_seconds: float = 10.0

    def slurm_options(self):  # noqa: ANN201
        from mliplake.ml.slurm import SlurmOptions

        return SlurmOptions(partition=self.partition, time=self.time, gpus=self.gpus,
                            cpus_per_task=self.cpus_per_task, mem=self.mem, account=self.account, setup=self.setup)


def _trainer_from_settings(settings: Settings) -> TrainerResource:
    return TrainerResource(launcher=settings.trainer, **settings.slurm_options())


def resources() -> dict[str, object]:
    """Resources from the settings; the URLs stay environment references, so secrets stay out of the UI."""
    settings = Settings()
    url = dg.EnvVar("MLIPLAKE_LAKE") if os.environ.get("MLIPLAKE_LAKE") else DEFAULT_LAKE
    search_url = dg.EnvVar("MLIPLAKE_OPENSEARCH_URL") if settings.opensearch_url.get_secret_value() else ""
    return {"lake": LakeResource(url=url), "opensearch": SearchResource(url=search_url),
            "trainer": _trainer_from_settings(settings)}
