"""Where the Multi-Power Law's form limits ``effsweep mpl fit``: a profile of the fit over C.

On recorded curves (``benchmarks/curves/mpl*``: ``fit_*.csv`` and
``predict_*.csv``, see ``record_mpl_curves.py``) this prints, for C held at
each of several values from 0.1 to 100 (alpha, beta, gamma and the linear
parameters fitted as ``effsweep mpl fit`` fits them), the final-loss error
of every curve, fitted and predicted. C sets how soon the benefit of a
decrease of the rate saturates: if no C predicts every curve within the
target, no fit of the fitted curves will. ``--wide`` lets beta and gamma go
far below the paper's range. Then two checks that need no prediction:

- the law fitted to every curve at once (predicted ones too): its final
  errors are the least a fit of the fitted curves alone could expect;
- the gain of each curve over the constant-rate run (same data order), at
  the end and 300 steps after its first decrease (for a step schedule, the
  drop's benefit; a gradual one has barely begun to decrease then), with
  the share of the peak rate it ends at: whether the benefit of a decrease
  grows with its size, as the law's decay term does.

Run: ``.venv/bin/python benchmarks/mpl_profile.py [--curves benchmarks/curves/mpl_small]
[--min-step auto] [--wide] [--smoke]``; the last line is one JSON object. ``--smoke``
reads the curves on a clock ``SMOKE_CLOCK`` times coarser (every step divided by
it, ``AFTER_DROP`` too): the same shapes, and a fraction of the work of fitting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from smoke import add_smoke_flag

from orchestrator.curves import Curve
from orchestrator.laws import read_fitted_curves
from orchestrator.mpl.fit import MPLFit, fit_mpl

HERE = Path(__file__).resolve().parent
C_VALUES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
WIDE = {"beta": (0.01, 3.0), "gamma": (0.01, 2.0)}
AFTER_DROP = 300  # steps after a decrease at which its first gain is read
SMOKE_CLOCK = 10


def _final_errors(fit: MPLFit, curves: list[Curve]) -> dict[str, float]:
    return {_short(c.name): float(fit.predict(c.lrs, c.steps[-1:])[0] / c.losses[-1] - 1.0) for c in curves}


def _short(name: str) -> str:
    return Path(name).stem.removeprefix("fit_").removeprefix("predict_")


def _gains_over_constant(curves: list[Curve], after_drop: int) -> dict[str, dict[str, float]]:
    """Loss of the constant run minus each other curve's, at the end and ``after_drop`` after its first decrease."""
    constant = next((c for c in curves if _short(c.name) == "constant"), None)
    if constant is None:
        return {}
    at = dict(zip(constant.steps.tolist(), constant.losses, strict=True))
    gains = {}
    for curve in curves:
        peak = int(np.argmax(curve.lrs))
        decreased = np.flatnonzero(curve.lrs[peak:] < 0.99 * curve.lrs[peak])
        if curve is constant or not len(decreased) or curve.steps[-1] != constant.steps[-1]:
            continue
        soon = curve.steps >= peak + decreased[0] + 1 + after_drop
        first = int(curve.steps[soon][0])
        gains[_short(curve.name)] = {
            "at_end": float(at[int(curve.steps[-1])] - curve.losses[-1]),
            f"{after_drop}_steps_after_decrease": float(at[first] - curve.losses[soon][0]),
            "final_rate_share": float(curve.lrs[-1] / curve.lrs[peak]),
        }
    return gains


def _on_coarser_clock(curves: Path, into: Path) -> None:
    """Copy the fit and predict CSVs of ``curves`` into ``into`` with every step divided by ``SMOKE_CLOCK``."""
    for path in [*curves.glob("fit_*.csv"), *curves.glob("predict_*.csv")]:
        table = pd.read_csv(path)
        table["step"] //= SMOKE_CLOCK
        table.to_csv(into / path.name, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=HERE / "curves" / "mpl_small")
    parser.add_argument("--min-step", default="auto", help="first step fitted and scored, or 'auto'")
    parser.add_argument("--wide", action="store_true", help="beta in [0.01, 3] and gamma in [0.01, 2]")
    add_smoke_flag(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as coarser:
        folder = args.curves
        if args.smoke:
            _on_coarser_clock(args.curves, Path(coarser))
            folder = Path(coarser)
        fit_paths = sorted(folder.glob("fit_*.csv"))
        predict_paths = sorted(folder.glob("predict_*.csv"))
        if not fit_paths or not predict_paths:
            parser.error(f"{args.curves} needs fit_*.csv and predict_*.csv curves")
        fitted, min_step = read_fitted_curves(fit_paths, args.min_step)
        predicted = [Curve.read_csv(p).from_step(min_step) for p in predict_paths]
        every_curve = [Curve.read_csv(p) for p in fit_paths + predict_paths]
    wide = WIDE if args.wide else {}
    profile: dict[str, Any] = {}
    for c in C_VALUES:
        fit = fit_mpl(fitted, per_curve=(), bounds={**wide, "C": (c, c)})
        errors = _final_errors(fit, fitted + predicted)
        worst = max(abs(errors[_short(p.name)]) for p in predicted)
        shape = {k: fit.shared[k] for k in ("alpha", "beta", "gamma")}
        profile[f"{c:g}"] = {"shape": shape, "final_errors": errors, "worst_predicted": worst}
        print(f"C={c:<5g} worst predicted {worst:6.2%}  " + "  ".join(f"{k} {v:+.2%}" for k, v in errors.items()))
    every = fit_mpl(fitted + predicted, per_curve=(), bounds=wide)
    all_errors = _final_errors(every, fitted + predicted)
    print("fitted to every curve: " + "  ".join(f"{k} {v:+.2%}" for k, v in all_errors.items()))
    gains = _gains_over_constant(every_curve, AFTER_DROP // SMOKE_CLOCK if args.smoke else AFTER_DROP)
    for name, gain in gains.items():
        print(f"gain over constant, {name}: " + "  ".join(f"{k} {v:.3f}" for k, v in gain.items()))
    summary = {
        "curves": str(args.curves),
        "min_step": min_step,
        "wide": args.wide,
        "profile_over_C": profile,
        "best_worst_predicted_error": min(v["worst_predicted"] for v in profile.values()),
        "fitted_to_every_curve": {"fit": every.to_json(), "final_errors": all_errors},
        "gains_over_constant": gains,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
