"""Jobs for the ML loop (one partitioning each), as the UI, schedules and the main job run them."""
import dagster as dg

training_set_job = dg.define_asset_job("materialise_training_set", selection=["training_sets"])
train_model_job = dg.define_asset_job("train_model", selection=["models"])
benchmark_job = dg.define_asset_job("run_benchmark", selection=["benchmarks"])
leaderboard_job = dg.define_asset_job("refresh_leaderboard", selection=["leaderboard"])
generate_job = dg.define_asset_job("generate_structures", selection=["generated_structures"])
