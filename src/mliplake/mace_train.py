"""``python -m mliplake.mace_train ARGS``: MACE's ``mace_run_train`` in its own process, with two changes.

- TorchScript's profiling executor is switched off: with it, every new batch shape
  (the number of edges changes from batch to batch) is re-specialised, which made the
  first epoch of a tiny CPU model take minutes instead of a second.
- ``--device auto`` picks CUDA when there is a GPU.
After training it prints one line ``MLIPLAKE_MODEL {json}`` (parameters, elements) for the caller.
"""
import json
import sys


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
    }
    print("MLIPLAKE_MODEL " + json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
