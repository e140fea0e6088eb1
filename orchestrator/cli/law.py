"""``effsweep law`` (also ``effsweep mpl``): fit a loss law to curves saved as CSV, draw it, rank a spec's schedules."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.cli.options import spec_from_args

_TITLES = {"mpl": "Multi-Power Law", "optlaws": "Convergence-and-escape law (after Opt-Laws)"}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``law`` (alias ``mpl``) and its actions to the ``effsweep`` parser's subcommands."""
    law = commands.add_parser(
        "law", aliases=["mpl"], help="fit a loss law to loss curves, predict others, plot, rank a spec's schedules"
    )
    actions = law.add_subparsers(required=True, metavar="ACTION")
    for action, summary in (("fit", "fit curves, predict others, print one JSON object"), ("plot", "draw them")):
        sub = actions.add_parser(action, help=summary, description="Each CSV has the columns step, lr, loss.")
        sub.add_argument(
            "--law", type=_law, default="mpl", help="the loss law to fit (default mpl; others: docs/schedules.md)"
        )
        sub.add_argument("--fit", type=Path, nargs="+", required=True, metavar="CSV", help="curves to fit")
        sub.add_argument("--predict", type=Path, nargs="*", default=[], metavar="CSV", help="curves to predict")
        sub.add_argument(
            "--min-step", type=_min_step, default=0, metavar="N|auto",
            help="fit and score only rows from step N (default 0); auto chooses it on the fitted curves",
        )  # fmt: skip
        if action == "fit":
            sub.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON object to OUT")
            sub.set_defaults(command=_fit)
        else:
            sub.add_argument("--out", type=Path, required=True, help="the PNG to write")
            sub.set_defaults(command=_plot)
    rank = actions.add_parser(
        "rank",
        help="rank a spec's schedules by a fit's predicted final loss; write a spec restricted to the best",
        description="Predicts the final loss of every schedule the spec's space can draw (each choice, --levels "
        "points across each range) from its planned rates, before any training.",
    )
    rank.add_argument("spec", type=Path, help="the sweep spec (YAML) whose schedules to rank")
    rank.add_argument("--fit", type=Path, required=True, help="a fit written by 'effsweep law fit --json'")
    rank.add_argument("--top", type=_positive, default=2, help="how many to keep (default 2)")
    rank.add_argument("--levels", type=_positive, default=3, help="points across each range knob (default 3)")
    rank.add_argument("--out", type=Path, help="write the spec restricted to the top schedules here")
    rank.set_defaults(command=_rank)


def _law(name: str) -> str:
    from orchestrator.laws import LAWS

    if name not in LAWS:
        raise argparse.ArgumentTypeError(f"unknown law {name!r}; choose from {', '.join(LAWS)}")
    return name


def _min_step(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of steps or 'auto', got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _fit(args: argparse.Namespace) -> int:
    from orchestrator.laws import fit_and_predict

    _, report = fit_and_predict(args.fit, args.predict, args.min_step, law=args.law)
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


def _plot(args: argparse.Namespace) -> int:
    from orchestrator.curves import Curve
    from orchestrator.laws import LAWS, read_fitted_curves
    from orchestrator.plots import plot_law

    fitted, min_step = read_fitted_curves(args.fit, args.min_step)
    predicted = [Curve.read_csv(p).from_step(min_step) for p in args.predict]
    print(plot_law(fitted, predicted, LAWS.load(args.law).fit_curves(fitted), _TITLES[args.law], args.out))
    return 0


def _rank(args: argparse.Namespace) -> int:
    from orchestrator.laws import read_law_fit
    from orchestrator.schedule_rank import rank_schedules, write_restricted_spec

    spec = spec_from_args(args)
    ranked = rank_schedules(spec, read_law_fit(args.fit), levels=args.levels)
    print(f"{len(ranked)} schedules of {args.spec} ranked by predicted final loss; the best {args.top}:")
    for place, candidate in enumerate(ranked[: args.top], start=1):
        settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in candidate.point.items())
        outside = "  (peak rate outside the fitted curves': an extrapolation)" if candidate.beyond_fitted_peaks else ""
        print(f"{place:3}. {candidate.predicted_final:.4f}  {settings}{outside}")
    if args.out:
        restricted = write_restricted_spec(args.spec, ranked[: args.top], args.out)
        print(f"wrote {args.out}: {restricted.name}, searching {', '.join(k.name for k in restricted.knobs)}")
    return 0
