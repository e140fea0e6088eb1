"""``effsweep mpl fit`` and ``effsweep mpl plot``: the Multi-Power Law on loss curves saved as CSV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.mpl.fit import Curve, fit_and_predict, fit_mpl, read_fitted_curves
from orchestrator.plots import plot_mpl


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``mpl`` and its actions to the ``effsweep`` parser's subcommands."""
    mpl = commands.add_parser("mpl", help="fit the Multi-Power Law to loss curves, predict others, plot")
    mpl_commands = mpl.add_subparsers(required=True, metavar="ACTION")
    for action, summary in (("fit", "fit curves, predict others, print one JSON object"), ("plot", "draw them")):
        sub = mpl_commands.add_parser(action, help=summary, description="Each CSV has the columns step, lr, loss.")
        sub.add_argument("--fit", type=Path, nargs="+", required=True, metavar="CSV", help="curves to fit")
        sub.add_argument("--predict", type=Path, nargs="*", default=[], metavar="CSV", help="curves to predict")
        sub.add_argument(
            "--min-step", type=_min_step, default=0, metavar="N|auto",
            help="fit and score only rows from step N (default 0); auto chooses it on the fitted curves",
        )  # fmt: skip
        if action == "fit":
            sub.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON object to OUT")
            sub.set_defaults(command=_mpl_fit)
        else:
            sub.add_argument("--out", type=Path, required=True, help="the PNG to write")
            sub.set_defaults(command=_mpl_plot)


def _min_step(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of steps or 'auto', got {text!r}")
    return int(text)


def _mpl_fit(args: argparse.Namespace) -> int:
    _, report = fit_and_predict(args.fit, args.predict, args.min_step)
    if args.min_step == "auto":
        print(f"fitting from step {report['min_step']} (chosen by --min-step auto)")
    for group in ("fitted", "predicted"):
        for name, scores in report[group].items():
            print(f"{group:9} {name}: r2 {scores['r2']:.4f}  final error {scores['final_rel_error']:.2%}  "
                  f"worst {scores['worst_rel_error']:.2%}")  # fmt: skip
    text = json.dumps(report)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


def _mpl_plot(args: argparse.Namespace) -> int:
    fitted, min_step = read_fitted_curves(args.fit, args.min_step)
    predicted = [Curve.read_csv(p).from_step(min_step) for p in args.predict]
    print(plot_mpl(fitted, predicted, fit_mpl(fitted, per_curve=()), args.out))
    return 0
