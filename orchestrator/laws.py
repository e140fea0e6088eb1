"""The loss laws effsweep fits to curves: ``LAWS`` maps each name to its fit class, imported when named.

``effsweep law fit`` fits one to CSV curves and scores it on others;
``effsweep law rank`` ranks a spec's schedules by a fit's predicted final
loss. See docs/schedules.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.curves import Curve, CurveError, LawFit, prediction_scores
from orchestrator.mpl.fit import choose_min_step
from trainables.registry import Registry

__all__ = ["LAWS", "fit_and_predict", "read_fitted_curves", "read_law_fit"]

LAWS: Registry[LawFit] = Registry(
    "law",
    LawFit,
    {"mpl": "orchestrator.mpl.fit:MPLFit", "optlaws": "orchestrator.optlaws.fit:OptLawFit"},
)


def read_fitted_curves(fit_paths: Sequence[Path], min_step: int | str) -> tuple[list[Curve], int]:
    """The curves to fit from their CSVs, from ``min_step`` on, and that step (``"auto"``: ``choose_min_step``)."""
    curves = [Curve.read_csv(p) for p in fit_paths]
    first = choose_min_step(curves) if min_step == "auto" else int(min_step)
    return [c.from_step(first) for c in curves], first


def fit_and_predict(
    fit_paths: Sequence[Path], predict_paths: Sequence[Path], min_step: int | str = 0, law: str = "mpl"
) -> tuple[LawFit, dict[str, Any]]:
    """``effsweep law fit``: one set of the law's parameters for the ``fit_paths`` curves, scored on every curve.

    Rows before ``min_step`` (a step, or ``"auto"``: see ``choose_min_step``)
    are neither fitted nor scored: the first few hundred steps of a run
    leave a transient that would otherwise bend the fit.
    """
    fitted_curves, min_step = read_fitted_curves(fit_paths, min_step)
    predicted_curves = [Curve.read_csv(p).from_step(min_step) for p in predict_paths]
    fit = LAWS.load(law).fit_curves(fitted_curves)
    report: dict[str, Any] = {"law": law, "fit": fit.to_json(), "min_step": min_step, "fitted": {}, "predicted": {}}
    for group, curves in (("fitted", fitted_curves), ("predicted", predicted_curves)):
        for curve in curves:
            report[group][curve.name] = prediction_scores(fit.predict(curve.lrs, curve.steps), curve.losses)
    return fit, report


def read_law_fit(path: Path) -> LawFit:
    """A fit saved by ``effsweep law fit --json`` (one without a ``law`` is the Multi-Power Law's)."""
    try:
        saved = json.loads(Path(path).read_text())
        return LAWS.load(saved.get("law", "mpl")).from_json(saved["fit"])
    except FileNotFoundError:
        raise CurveError(f"{path}: no such fit file") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CurveError(f"{path}: not a fit written by 'effsweep law fit --json' ({exc})") from None
