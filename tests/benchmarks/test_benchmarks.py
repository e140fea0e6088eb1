"""Every benchmark script still runs: its ``--smoke`` mode, end to end in a fresh process, prints the full run's keys.

A benchmark is a script (it imports its sibling ``corpora`` as a top-level
module), so each runs as ``python benchmarks/NAME.py --smoke``; its last
line is the JSON object its full run prints. The keys listed here are the
ones each full run prints (read from its code), figures quoted in
``docs/benchmarks.md`` among them. Smoke runs read only what the repository
and gensim hold, never ``../shared``, and write nothing into the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmark_runs import BenchmarkRuns
from tests.conftest import REPO

# The outputs a full run writes into the repository, which a smoke run must leave alone.
OUTPUTS = (REPO / "benchmarks" / "curves", REPO / "docs" / "img")

_PRUNERS = (
    "none", "asha", "asha_aggressive", "asha_late", "asha_conservative", "median", "hyperband",
    "mpl", "mpl_aggressive", "mpl_prior", "oracle", "oracle_unwaiting",
)  # fmt: skip

# script: (arguments besides --smoke, keys its last line must hold)
BENCHMARKS: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "overhead": ((), {
        "ray_init_s", "train_trials", "single_worker_sweep_s", "train_two_worker_sweep_s",
        "train_per_trial_overhead_s", "trials", "in_process_s", "sweep_s", "per_trial_overhead_s",
        "mlflow_points_per_s", "mlflow_points_per_s_caller", "mlflow_points_per_s_single", "batched_points",
        "trial_s_with_mlflow", "trial_s_without_mlflow", "trial_s_bare_tuner", "logging_slowdown",
        "orchestration_slowdown", "slowdown_trials_each", "repeats", "runs",
    }),
    # The paper's recipe on BPE tokens: the default one (positions, bytes) runs the same code with other values.
    "patch": (("--recipe", "equal", "--tokenizer", "bpe", "--vocab-size", "512"), {
        "corpus", "threads", "recipe", "tokenizer", "token_tokens_per_s", "patch_tokens_per_s_k2",
        "patch_throughput_ratio_k2",
        "patch_tokens_per_s_k4", "patch_throughput_ratio_k4", "patch_tokens_per_s_k8", "patch_throughput_ratio_k8",
        "token", "patch_equal_data", "patch_equal_compute", "cost_ratio_k4_l23", "data_ratio_equal_data",
        "val_loss_token", "val_loss_patch_equal_data", "val_loss_patch_equal_compute",
    }),
    # With a prior bank, as in every documented run, for the mpl_prior row; the joint bank serves as its own
    # prior here, as the first trials of the planned banks take minutes to fit.
    "pruning": (("--prior-bank", "benchmarks/curves/bank.parquet"), {
        "bank", "trials", "orders", "concurrency", "prior_bank", "first_decision",
        *(f"{name}_{figure}" for name in _PRUNERS for figure in ("compute", "regret", "worst_regret")),
        "spearman_at_10pct", "spearman_at_20pct", "spearman_at_30pct",
        "mpl_to_asha_compute", "mpl_prior_to_asha_compute",
    }),
    "cbs": ((), {
        "corpus", "compute_per_trial", "target_loss", "finder_bcrit", "finder_bcrit_interval", "finder_batch_sizes",
        "grid_bcrit", "grid_bcrit_interval", "grid_batch_sizes", "grid_reached", "grid_outpaced", "finder_outpaced",
        "finder_fitted_batch_sizes", "grid_fitted_batch_sizes", "bcrit_ratio_to_grid", "finder_compute",
        "grid_compute", "compute_fraction_of_grid", "gns_mean", "gns_ratio_to_grid_bcrit",
    }),
    "schedules": ((), {"corpus", "compute", "runs"}),
    "laws": ((), {
        "mpl_top2_hit_rate", "optlaws_top2_hit_rate", "mpl_mean_final_rel_error", "optlaws_mean_final_rel_error",
        "sets",
    }),
    "selection": ((), {
        "data_50k", "run_50k", "run_200k", "float32_loop_ms_per_pick_200k", "seconds_1m_100k", "speedup_50k",
        "speedup_200k", "speedup_200k_vs_float32_loop", "identical",
    }),
    "uniformity": (("--tokenizer", "bpe", "--vocab-size", "512"), {
        "documents", "train_tokens", "tokenizer", "seeds", "model", "uniformity", "training", "compute",
        "uniform_minus_random_0.1", "uniform_minus_random_0.25", "uniform_minus_random_0.5",
        "uniform_minus_random_tokens_0.1", "uniform_minus_random_tokens_0.25", "uniform_minus_random_tokens_0.5",
    }),
    "patch_study": (("--vocab-size", "512"), {
        "corpus", "tokenizer", "vocab_size", "model", "data_tokens", "seeds", "batch_size", "train_tokens", "token",
        "patch_equal_equal_data", "patch_equal_equal_compute", "patch_positions_equal_data",
        "patch_positions_equal_compute", "patch_equal_equal_data_minus_token_bpb",
        "patch_equal_equal_compute_minus_token_bpb", "patch_positions_equal_data_minus_token_bpb",
        "patch_positions_equal_compute_minus_token_bpb",
    }),
    # The memory ratios are named after the T's run (--steps): the smoke run has the T = 1,000 to 100 pair the
    # docs quote, not the full run's 10,000 to 1,000.
    "hypergrad": ((), {
        "smoke", "torch_threads", "lr", "momentum", "memory_steps", "reversible_peak_mib", "unrolled_peak_mib",
        "reversible_memory_s", "unrolled_memory_s", "unrolled_skipped", "reversal_exact", "peak_reset",
        "buffer_bytes", "buffer_bits_per_param_step", "log2_inverse_momentum", "memory_ratio_T1000_T100",
        "unrolled_memory_ratio_T1000_T100", "time_steps", "meta_to_train_time", "time_detail", "lm_time_steps",
        "lm_parameters", "lm_meta_to_train_time", "lm_time_detail", "search_steps_per_run", "training_steps_each",
        "hypergrad_meta_iterations", "hypergrad_chain_ended", "hypergrad_start_val_loss", "hypergrad_best_val_loss",
        "hypergrad_search_s", "tpe_trials", "tpe_best_val_loss", "tpe_best_val_loss_per_seed", "tpe_search_s",
        "hypergrad_to_tpe_val_loss", "groups", "hypergrad_best_lr_schedule", "hypergrad_best_momentum_schedule",
        "lr_plot", "wall_s",
    }),
    "mpl_profile": ((), {
        "curves", "min_step", "wide", "profile_over_C", "best_worst_predicted_error", "fitted_to_every_curve",
        "gains_over_constant",
    }),
    "mpl_schedule": ((), {
        "corpus", "model", "compute", "min_step", "fit", "runs", "mpl_optimal_vs_best_baseline", "mpl_optimal_shape",
    }),
    "record_curves": ((), {"bank", "trials", "reports", "statuses"}),
    "record_mpl_curves": ((), {"model", "curves", "base_steps", "runs"}),
    "data_scale": ((), {
        "corpus_gb", "documents", "train_tokens", "token_file_gb", "token_dtype", "sweep_data_pickle_kb", "prepare_s",
        "driver_peak_gb", "driver_baseline_gb", "driver_peak_gb_small", "small_corpus_mb", "model", "steps",
        "trial_peak_gb", "trial_peak_gb_small", "trial_baseline_gb", "trial_rss_ratio", "trial_train_s",
    }),
    # On the CPU, which every machine has: the same code path as on a GPU, at tiny sizes.
    "gpu": (("--device", "cpu"), {
        "device", "torch", "preset", "model_params", "model_params_non_embedding", "flops_per_token", "seq_len",
        "batch_size", "tokens_per_s", "mfu", "step_s", "peak_memory_gb", "speedup_vs_fp32", "compile_s",
        "patch_k4_ratio", "patch_k4_step_ratio", "variants", "selection_vectors", "selection_dim", "selection_k",
        "selection_device", "selection_tf32_in_force", "selection_gpu_s", "selection_gpu_s_at_cpu_k",
        "selection_passes", "selection_cpu_k", "selection_cpu_s", "selection_cpu_threads", "selection_speedup",
        "selection_identical", "wall_s",
    }),
}  # fmt: skip


def _written(folders: tuple[Path, ...]) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for folder in folders for path in folder.rglob("*") if path.is_file()}


# What the outputs held when the session's runs started (collection imports this module before any runs).
BEFORE_RUNS = _written(OUTPUTS)


def _smoke(script: str) -> object:
    arguments, _ = BENCHMARKS[script]
    return pytest.param(script, marks=pytest.mark.benchmark_run(script, "--smoke", *arguments), id=script)


@pytest.mark.slow
@pytest.mark.parametrize("script", [_smoke(script) for script in BENCHMARKS])
def test_smoke_run_prints_the_full_runs_keys(
    script: str, benchmark_runs: BenchmarkRuns, request: pytest.FixtureRequest
) -> None:
    result = benchmark_runs.result(request.node)
    keys = BENCHMARKS[script][1]
    assert keys <= result.keys(), f"{script}: missing {sorted(keys - result.keys())}"
    # The runs go one after another, each checked once all before it have ended.
    assert _written(OUTPUTS) == BEFORE_RUNS, f"a smoke run wrote into {[str(p) for p in OUTPUTS]}"


def test_every_benchmark_script_has_a_smoke_run_here() -> None:
    # A script is what can be run; helper modules (imported by the scripts) have no entry point.
    scripts = {path.stem for path in (REPO / "benchmarks").glob("*.py") if '__name__ == "__main__"' in path.read_text()}
    assert {"overhead", "crash"} <= scripts
    # crash.py's smoke run, the resume test, is tests/orchestrator/test_resume.py.
    assert scripts == {*BENCHMARKS, "crash"}


def test_the_gpu_benchmark_without_cuda_says_it_skipped() -> None:
    done = subprocess.run(
        [sys.executable, str(Path("benchmarks") / "gpu.py")],
        cwd=REPO,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, even on a machine that has one
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"skipped": "no CUDA"}
