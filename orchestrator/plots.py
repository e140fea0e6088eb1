"""Sweep-level pictures, written as PNG files for MLflow and the terminal user. See ``docs/architecture.md``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster head or in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from orchestrator.cbs.fit import CriticalBatchFit
from orchestrator.curves import Curve, LawFit
from orchestrator.results import SweepResults
from orchestrator.sweep_hooks import TrialMarks
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.loop import OBJECTIVE


def plot_val_loss(results: SweepResults, path: Path) -> Path:
    """Validation loss against compute for every trial that reported one; the best trial drawn bold.

    Each report is a marker as well as a point of the line, so that a trial that reported once shows.
    """
    best = results.best()
    reports = results.metrics.dropna(subset=["val_loss"])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for trial_id, curve in reports.groupby("trial_id"):
        is_best = best is not None and trial_id == best["trial_id"]
        ax.plot(
            curve["compute"], curve["val_loss"], marker="o", markersize=3.5 if is_best else 2.5,
            color="tab:red" if is_best else "tab:blue", alpha=1.0 if is_best else 0.35,
            linewidth=2.2 if is_best else 1.0, label=f"best: {trial_id}" if is_best else None,
        )  # fmt: skip
    unplotted = len(results.trials) - reports["trial_id"].nunique()
    ax.set_xlabel("compute (token-equivalents)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{len(results.trials)} trials" + (f", {unplotted} with no finite loss" if unplotted else ""))
    if best is not None:
        ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_trial_curves(trial: pd.Series, reports: pd.DataFrame, path: Path, marks: Sequence[TrialMarks] = ()) -> Path:
    """One trial's training and validation loss by step, with its final loss and what ``marks`` add.

    ``trial`` is the trial's row of the trials table, ``reports`` its rows of the per-report table; each of
    ``marks`` draws on the axes after the curves (``SweepHooks.trial_marks``).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for column, colour in (("train_loss", "tab:gray"), ("val_loss", "tab:blue")):
        if column in reports:
            curve = reports.dropna(subset=[column])
            ax.plot(curve["step"], curve[column], marker="o", markersize=2.5, color=colour, label=column)
    final = trial[OBJECTIVE]
    if math.isfinite(final):
        ax.axhline(final, color="tab:green", linestyle="--", linewidth=1, label=f"{OBJECTIVE} {final:.4f}")
    for mark in marks:
        mark(ax, trial["trial_id"])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"trial {trial['trial_id']}: {trial['status']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    # Margins fixed for this one layout (a sweep draws one such figure per trial): fitting them to the
    # labels takes a third of the drawing time.
    fig.subplots_adjust(left=0.11, right=0.97, top=0.93, bottom=0.11)
    return _save(fig, path, fit_margins=False)


def draw_predictions(ax: Axes, predictions: pd.DataFrame) -> None:
    """The MPL pruner's predictions for one trial, each at the step it was made, with its interval."""
    ax.errorbar(
        predictions["step"], predictions["mpl_pred_final"],
        yerr=[predictions["mpl_pred_final"] - predictions["mpl_pred_low"],
              predictions["mpl_pred_high"] - predictions["mpl_pred_final"]],
        fmt="D", color="tab:orange", markersize=4, capsize=3, label="MPL prediction of the final loss",
    )  # fmt: skip
    stopped = predictions[predictions["stopped"]]
    if not stopped.empty:
        ax.scatter(stopped["step"], stopped["mpl_pred_final"], marker="x", s=60, color="tab:red", zorder=3,
                   label="stopped on this prediction")  # fmt: skip


def plot_importances(importances: pd.DataFrame, path: Path) -> Path:
    """Each knob's fANOVA importance for the objective, the largest on top."""
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.4 * len(importances)), dpi=110)
    ordered = importances.sort_values("importance")
    ax.barh(ordered["knob"], ordered["importance"], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance of {OBJECTIVE} (fANOVA)")
    ax.set_title("knob importances")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_law(fitted: list[Curve], predicted: list[Curve], fit: LawFit, title: str, path: Path) -> Path:
    """Each curve's data (dots) against the law (lines): fitted curves solid, predicted ones dashed."""
    fig, (losses, rates) = plt.subplots(2, 1, figsize=(8, 7), dpi=110, sharex=True, height_ratios=(3, 1))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (curve, style) in enumerate([(c, "-") for c in fitted] + [(c, "--") for c in predicted]):
        colour = colours[i % len(colours)]
        name = Path(curve.name).stem
        # The law only over the rows it was fitted or scored on: before them (the transient a
        # --min-step leaves out, the warmup) it runs off to thousands and flattens the plot.
        steps = np.unique(np.linspace(curve.steps[0], len(curve.lrs), 400).astype(int))
        losses.plot(curve.steps, curve.losses, ".", color=colour, markersize=4)
        losses.plot(
            steps,
            fit.predict(curve.lrs, steps),
            style,
            color=colour,
            label=f"{name} ({'fit' if style == '-' else 'predicted'})",
        )
        rates.plot(np.arange(1, len(curve.lrs) + 1), curve.lrs, style, color=colour)
    losses.set_ylabel("loss")
    losses.set_title(f"{title}: data (dots), fitted (solid) and predicted (dashed)")
    losses.legend(fontsize=8)
    losses.grid(alpha=0.3)
    rates.set_xlabel("step")
    rates.set_ylabel("learning rate")
    rates.grid(alpha=0.3)
    return _save(fig, path)


def plot_predictions(predictions: pd.DataFrame, results: SweepResults, path: Path) -> Path:
    """The MPL pruner's predicted final losses against the final losses trials reached."""
    finals = results.trials.set_index("trial_id")["final_val_loss"]
    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=110)
    scored = predictions[predictions["trial_id"].isin(finals.dropna().index)]
    for fraction, group in scored.groupby(scored["fraction"].round(1)):
        actual = finals.loc[group["trial_id"]].to_numpy()
        ax.errorbar(
            actual, group["mpl_pred_final"],
            yerr=[group["mpl_pred_final"] - group["mpl_pred_low"], group["mpl_pred_high"] - group["mpl_pred_final"]],
            fmt="o", markersize=4, capsize=2, label=f"at {fraction:.0%} of the budget",
        )  # fmt: skip
    stopped = predictions[predictions["stopped"]]
    if not stopped.empty:
        ax.scatter([], [], marker="x", color="tab:red", label=f"{stopped['trial_id'].nunique()} trials stopped")
    lows = [predictions["mpl_pred_low"].min(), finals.min()]
    highs = [predictions["mpl_pred_high"].max(), finals.max()]
    line = [np.nanmin(lows), np.nanmax(highs)]
    ax.plot(line, line, color="0.5", linewidth=1)
    ax.set_xlabel("final validation loss reached")
    ax.set_ylabel("predicted final validation loss")
    ax.set_title("MPL predictions of completed trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_batch_study(points: pd.DataFrame, fit: CriticalBatchFit | None, path: Path) -> Path:
    """Steps and examples to the target against batch size, with the fitted S(b) and E(b) = S(b) b.

    Points past the batch size with the fewest steps (``fitted`` false) are drawn grey: the fit leaves them out.
    """
    fig, (steps_ax, examples_ax) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    reached = points[points["reached"]]
    missed = points[~points["reached"]]
    fitted = reached["fitted"] if "fitted" in reached else pd.Series(True, index=reached.index)
    for ax, column in ((steps_ax, "steps"), (examples_ax, "examples")):
        ax.scatter(reached["batch_size"][fitted], reached[column][fitted], color="tab:blue", zorder=3,
                   label="reached the target (fitted)")  # fmt: skip
        if not fitted.all():
            ax.scatter(reached["batch_size"][~fitted], reached[column][~fitted], color="tab:gray", zorder=3,
                       label="reached, past the fewest steps")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (sequences)")
        ax.set_ylabel(f"{column} to the target loss")
    for b in missed["batch_size"]:
        steps_ax.axvline(b, color="tab:red", alpha=0.4, linestyle=":")
    if fit is not None:
        grid = np.geomspace(points["batch_size"].min(), points["batch_size"].max(), 100)
        steps_ax.plot(grid, fit.steps(grid), color="tab:orange", label=f"S_min (1 + {fit.b_crit:.0f} / b)")
        examples_ax.plot(grid, fit.steps(grid) * grid, color="tab:orange", label="E(b) = S(b) b")
        for ax in (steps_ax, examples_ax):
            ax.axvline(fit.b_crit, color="tab:green", linestyle="--", label=f"B_crit = {fit.b_crit:.1f}")
    steps_ax.legend(fontsize=8)
    examples_ax.legend(fontsize=8)
    return _save(fig, path)


def plot_learned_schedules(hyper: Hyperparameters, groups: list[str], history: pd.DataFrame, path: Path) -> Path:
    """Learning rate and momentum of each group by block of steps (as the paper's figure 2), and each chain's loss."""
    fig, (rates, momenta, losses) = plt.subplots(1, 3, figsize=(13, 4), dpi=110)
    blocks = np.arange(1, hyper.blocks + 1)
    for i, group in enumerate(groups):
        rates.plot(blocks, np.exp(hyper.log_lr[:, i]), marker="o", markersize=3, label=group)
        momenta.plot(blocks, hyper.momenta()[:, i], marker="o", markersize=3, label=group)
    rates.set_yscale("log")
    for ax, label in ((rates, "learning rate"), (momenta, "momentum")):
        ax.set_xlabel("block of steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    rates.set_title("learned schedules (best meta-iteration)")
    rates.legend(fontsize=7)
    for chain, rows in history.groupby("chain"):
        losses.plot(rows["meta_step"], rows["val_loss"], marker="o", label=f"chain {chain}")
    losses.set_xlabel("meta-iteration")
    losses.set_ylabel("validation loss (nats/token)")
    losses.grid(alpha=0.3)
    if not history.empty:
        losses.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path, *, fit_margins: bool = True) -> Path:
    if fit_margins:
        fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
