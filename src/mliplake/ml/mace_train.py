"""``python -m mliplake.ml.mace_train ARGS``: MACE's ``mace_run_train`` in its own process, with three changes.

- TorchScript's profiling executor is switched off: with it, every new batch shape
  (the number of edges changes from batch to batch) is re-specialised, which made the
  first epoch of a tiny CPU model take minutes instead of a second.
- ``--device auto`` picks CUDA when there is a GPU.
- Launched by Dagster Pipes (a Slurm job submitted by the ``models`` asset), each epoch line
  is sent to the Dagster run as it is logged, and the model's facts at the end.
After training it prints one line ``MLIPLAKE_MODEL {json}`` (parameters, elements, hardware,
seconds) for the caller.
"""
import contextlib
import json
import logging
import os
import platform
import re
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

EPOCH = re.compile(r"Epoch (\d+):.*?loss=([-\d.eE+]+), RMSE_E_per_atom=\s*([-\d.eE+]+) meV, RMSE_F=\s*([-\d.eE+]+) meV")
MODEL_LINE = "MLIPLAKE_MODEL "


class _EpochsToPipes(logging.Handler):
    """MACE logs its epochs through ``logging``; forward those lines to the Dagster run."""

    def __init__(self, pipes: Any) -> None:
        super().__init__(logging.INFO)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if EPOCH.search(msg):
            self.pipes.log.info(msg)


@contextlib.contextmanager
def _pipes() -> Iterator[Any]:
    if "DAGSTER_PIPES_CONTEXT" not in os.environ:
        yield None
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        handler = _EpochsToPipes(pipes)
        logging.getLogger().addHandler(handler)
        try:
            yield pipes
        finally:
            logging.getLogger().removeHandler(handler)


def main() -> None:
    import torch

    torch._C._jit_set_profiling_executor(False)
    torch._C._jit_set_profiling_mode(False)
    args = sys.argv[1:]
    if "--device" in args:
        i = args.index("--device") + 1
        if args[i] == "auto":
            args[i] = "cuda" if torch.cuda.is_available() else "cpu"
    from mace.cli.run_train import main as run_train

    t0 = time.perf_counter()
    with _pipes() as pipes:
        if pipes:
            pipes.log.info(f"training on {socket.gethostname()} ({args[args.index('--device') + 1]})")
        sys.argv = ["mace_run_train", *args]
        run_train()
        name = args[args.index("--name") + 1]
        model_dir = args[args.index("--model_dir") + 1] if "--model_dir" in args else "."
        model = torch.load(f"{model_dir}/{name}.model", map_location="cpu", weights_only=False)
        info = {
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "atomic_numbers": [int(z) for z in model.atomic_numbers.tolist()],
            "r_max": float(model.r_max),
            "device": args[args.index("--device") + 1] if "--device" in args else "cpu",
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "host": socket.gethostname(), "seconds": round(time.perf_counter() - t0, 1),
        }
        if pipes:
            pipes.report_custom_message(info)
    print(MODEL_LINE + json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
