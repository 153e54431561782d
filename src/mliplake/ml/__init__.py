"""ML: training sets, MACE training (local or Slurm), the model registry, benchmarks, the leaderboard,
metrics and generated structures fed back into the lake."""
