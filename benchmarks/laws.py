"""The Multi-Power Law against the convergence-and-escape law (after Opt-Laws) on the recorded curves.

For each set of curves in ``benchmarks/curves/`` (``mpl``: the tiny model;
``mpl_small``: 0.8M parameters; ``mpl_small_3k``: the same with base runs of
3,000 steps) each law is fitted to the three ``fit_*`` curves (constant,
cosine, two-step), from the step ``--min-step auto`` chooses, and predicts
the five ``predict_*`` ones from their rates. Two figures per law:

- ``final_rel_error``: each predicted curve's final-loss error (mean, worst);
- ranking: the schedules of the base length (the three fitted and the three
  predicted ones that end where they do) ordered by predicted final loss
  against their real order: a top-2 hit when the really best is among the
  two the law ranks first (one event per set), and the share of pairs
  ordered rightly; the pair of 3x runs (cosine, WSD) likewise.

Run: ``.venv/bin/python benchmarks/laws.py`` (about a minute); the last line
printed is one JSON object. ``--smoke`` fits the smallest set only.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from smoke import add_smoke_flag

from orchestrator.curves import Curve
from orchestrator.laws import LAWS, read_fitted_curves

CURVES = Path(__file__).resolve().parent / "curves"
SETS = ("mpl", "mpl_small", "mpl_small_3k")


def _pairs_right(predicted: list[float], real: list[float]) -> float:
    pairs = list(itertools.combinations(range(len(real)), 2))
    right = sum((predicted[i] < predicted[j]) == (real[i] < real[j]) for i, j in pairs)
    return right / len(pairs)


def judge(folder: Path, law: str) -> dict[str, Any]:
    """One law on one set of curves (see the module docstring)."""
    fitted, min_step = read_fitted_curves(sorted(folder.glob("fit_*.csv")), "auto")
    predicted = [Curve.read_csv(p).from_step(min_step) for p in sorted(folder.glob("predict_*.csv"))]
    fit = LAWS.load(law).fit_curves(fitted)

    def final(curve: Curve) -> float:
        return float(fit.predict(curve.lrs, curve.steps[-1:])[0])

    errors = {Path(c.name).stem: abs(final(c) / c.losses[-1] - 1) for c in predicted}
    base_length = int(fitted[0].steps[-1])
    base = [c for c in fitted + predicted if int(c.steps[-1]) == base_length]
    longer = [c for c in predicted if int(c.steps[-1]) > base_length]
    guesses, reals = [final(c) for c in base], [float(c.losses[-1]) for c in base]
    best = int(np.argmin(reals))
    result = {
        "min_step": min_step,
        "final_rel_error": errors,
        "mean_final_rel_error": float(np.mean(list(errors.values()))),
        "worst_final_rel_error": float(max(errors.values())),
        "top2_hit": best in np.argsort(guesses)[:2],
        "predicted_best": Path(base[int(np.argmin(guesses))].name).stem,
        "really_best": Path(base[best].name).stem,
        "pairs_ordered_right": _pairs_right(guesses, reals),
    }
    if len(longer) >= 2:
        result["longer_pairs_ordered_right"] = _pairs_right([final(c) for c in longer], [c.losses[-1] for c in longer])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_smoke_flag(parser)
    args = parser.parse_args()
    sets = SETS[:1] if args.smoke else SETS
    results: dict[str, Any] = {law: {} for law in LAWS}
    for law, name in itertools.product(LAWS, sets):
        judged = judge(CURVES / name, law)
        results[law][name] = judged
        print(
            f"{law:8} {name:13} from step {judged['min_step']}: mean final error "
            f"{judged['mean_final_rel_error']:.2%}, worst {judged['worst_final_rel_error']:.2%}; top-2 hit "
            f"{judged['top2_hit']} (predicted best {judged['predicted_best']}, really {judged['really_best']}), "
            f"pairs right {judged['pairs_ordered_right']:.0%}"
        )
    summary = {
        f"{law}_top2_hit_rate": float(np.mean([results[law][s]["top2_hit"] for s in sets])) for law in LAWS
    } | {f"{law}_mean_final_rel_error": float(np.mean([results[law][s]["mean_final_rel_error"] for s in sets]))
         for law in LAWS}  # fmt: skip
    print(json.dumps(summary | {"sets": results}, default=bool))


if __name__ == "__main__":
    main()
