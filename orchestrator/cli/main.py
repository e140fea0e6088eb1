"""The ``effsweep`` command. Each subcommand is thin and calls one function elsewhere.

Exit codes: 0 success, 1 a run that could not finish (bad corpus, sweep
directory conflict, no trial completed), 2 a spec or usage problem, 141 the
reader of the output went away (as a process killed by SIGPIPE reports it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import ValidationError

from orchestrator.cbs.study import UnreachableTarget, run_batch_study, write_batch_size
from orchestrator.cli import cluster as cli_cluster
from orchestrator.cli import mpl as cli_mpl
from orchestrator.cli.console import ProgressBar, sweep_console
from orchestrator.importance import format_importances, read_importances
from orchestrator.layout import SweepDirError, SweepLayout, SweepRecord
from orchestrator.mpl.fit import CurveError
from orchestrator.results import CONFIG_PREFIX, format_table, read_results
from orchestrator.selection.select_command import order_corpus
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.sweep import cache_dir, run_sweep
from orchestrator.ui import serve_ui
from search_spaces.catalog import description, ready_specs
from trainables.data.corpus import CorpusError, CorpusFormat
from trainables.loop import OBJECTIVE
from trainables.selection.embeddings import EmbeddingConfig


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _command(args)
        sys.stdout.flush()  # here, so that a closed pipe is noticed while it can still be handled
    except BrokenPipeError:
        # As Python's documentation advises: no more output can be read, and the interpreter's own
        # flush at exit would fail again on the old stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


def _command(args: argparse.Namespace) -> int:
    """Run the chosen command, turning the errors a user can fix into a message and an exit code."""
    try:
        return args.command(args)
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except (CorpusError, CurveError, SweepDirError, FileNotFoundError) as exc:
        print(f"effsweep: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effsweep", description="Joint sweeps of training-efficiency knobs on Ray Tune."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a sweep spec on local Ray (or a cluster with --address)")
    run.add_argument("spec", type=Path, help="the sweep spec (YAML), or - to read it from standard input")
    _add_address(run)
    run.add_argument("--output", type=Path, help="sweep directory (default: the spec's output_dir, else sweeps/NAME)")
    run.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, the spec, or SQLite in the sweep directory)",
    )
    run.add_argument("--storage", help="trials' results and checkpoints: a shared path or s3://BUCKET/PATH")
    _add_console_flags(run)
    run.set_defaults(command=_run)

    cli_cluster.add_commands(commands)

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted sweep from its directory",
        description="Reads DIR/spec.yaml and continues the sweep in DIR: finished trials stay finished, "
        "unfinished and errored ones run again (from their last checkpoint where they have one), into the "
        "same MLflow runs.",
    )
    resume.add_argument("dir", type=Path, help="the sweep directory, as effsweep run printed it")
    _add_address(resume)
    resume.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the sweep used)")
    _add_console_flags(resume)
    resume.set_defaults(command=_resume)

    cbs = commands.add_parser(
        "cbs",
        help="find the critical batch size: steps to a target loss against batch size",
        description="Runs the spec's trial at several batch sizes to a target validation loss, refines around "
        "the knee and fits S(b) = S_min (1 + B_crit / b); prints a table and one JSON object last.",
    )
    cbs.add_argument("spec", type=Path, help="a sweep spec (YAML): its trial is run, its search space ignored")
    cbs.add_argument("--target", type=float, help="target validation loss (default: a pilot run picks it)")
    cbs.add_argument("--sizes", help="comma-separated batch sizes of the first round (default: powers of two)")
    cbs.add_argument("--output", type=Path, help="study directory (default: the spec's output_dir)")
    _add_address(cbs)
    cbs.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON object to OUT")
    cbs.add_argument("--write-to", type=Path, metavar="SPEC", help="write the spec with the found batch size")
    cbs.set_defaults(command=_cbs)

    validate = commands.add_parser("validate", help="check a spec and list every problem")
    validate.add_argument("spec", type=Path, help="the sweep spec (YAML) to check")
    validate.set_defaults(command=_validate)

    results = commands.add_parser("results", help="trials of a sweep, best first, and which knobs mattered")
    results.add_argument("dir", type=Path, help="a sweep directory (effsweep run --output)")
    results.add_argument("--top", type=int, help="show only the best N trials")
    results.add_argument("--json", action="store_true", help="one JSON object per trial instead of a table")
    results.set_defaults(command=_results)

    select = commands.add_parser(
        "select",
        help="order a corpus for data selection and write the order as Parquet",
        description="Writes one row per document of the corpus (blank documents dropped): document "
        "(0-based index), rank, distance (cosine distance to the nearest earlier document when picked).",
    )
    select.add_argument("corpus", help="a corpus file, or gensim:NAME for one gensim ships")
    select.add_argument(
        "--strategy", choices=["uniform", "random"], default="uniform", help="selection order (default uniform)"
    )
    select.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    select.add_argument("--fraction", type=float, default=1.0, help="rank greedily up to this share (uniform)")
    select.add_argument("--format", default="auto", help="auto, lines, paragraphs, json, jsonl or parquet")
    select.add_argument(
        "--fields",
        help="comma-separated record fields joined into a document, matched exactly (default: those of "
        "instruction, input, output the first record has in any capitalisation; text for Parquet)",
    )
    select.add_argument("--seed", type=int, default=0, help="seed of a random order")
    for name, default in (("vector-size", 100), ("window", 5), ("min-count", 2)):
        select.add_argument(f"--{name}", type=int, default=default, help=f"Word2Vec {name} (default {default})")
    select.add_argument("--epochs", default="auto", help="Word2Vec passes, or auto (about 3M word occurrences)")
    select.add_argument("--embedding-seed", type=int, default=0, help="Word2Vec seed")
    select.add_argument("--pretrained", help="a KeyedVectors file to use instead of training Word2Vec")
    select.set_defaults(command=_select)

    cli_mpl.add_commands(commands)

    spaces = commands.add_parser("spaces", help="list the ready sweep specs that ship with effsweep")
    spaces.set_defaults(command=_spaces)

    ui = commands.add_parser("ui", help="serve the MLflow UI for a sweep")
    ui.add_argument("dir", type=Path, help="a sweep directory (effsweep run --output)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, help="default: a free port")
    ui.set_defaults(command=_ui)
    return parser


def _add_address(command: argparse.ArgumentParser) -> None:
    """The cluster to join, for the commands that run trials."""
    command.add_argument("--address", help="Ray cluster address (default: start Ray locally)")


def _add_console_flags(command: argparse.ArgumentParser) -> None:
    """How much a running sweep shows, for the commands that run one."""
    command.add_argument("--quiet", action="store_true", help="no line per trial event, only the summary")
    command.add_argument(
        "--verbose",
        action="store_true",
        help="also a line per trial report, and the logs and warnings of Ray, Tune, MLflow, Optuna and Python, "
        "which otherwise go only to the sweep's effsweep.log",
    )


def _version() -> str:
    try:
        return version("effsweep")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _load(args: argparse.Namespace) -> SweepSpec:
    spec = load_spec(args.spec)
    if getattr(args, "output", None):
        spec = dataclasses.replace(spec, output_dir=args.output)
    if getattr(args, "storage", None):
        spec = dataclasses.replace(spec, storage=args.storage)
    return spec


def _validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    print(f"{args.spec}: ok ({spec.trials} trials of {', '.join(k.name for k in spec.knobs)})")
    return 0


def _cbs(args: argparse.Namespace) -> int:
    spec = _load(args)
    try:
        sizes = [int(b) for b in args.sizes.split(",")] if args.sizes else None
    except ValueError:
        print(f"effsweep cbs: --sizes must be comma-separated integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    try:
        study = run_batch_study(spec, target=args.target, sizes=sizes, address=args.address)
    except UnreachableTarget as exc:
        print(f"effsweep cbs: {exc}", file=sys.stderr)
        return 1
    print(f"target validation loss {study.target:.4f}")
    print(f"{'batch':>6} {'reached':>8} {'steps':>9} {'examples':>10} {'gns':>8} {'outpaced':>9} {'fitted':>7}")
    for row in study.points.itertuples():
        print(f"{row.batch_size:>6} {row.reached!s:>8} {row.steps:>9.1f} {row.examples:>10.0f} {row.gns:>8.1f} "
              f"{row.outpaced!s:>9} {row.fitted!s:>7}")  # fmt: skip
    fit = study.fit
    print(f"B_crit {fit.b_crit:.1f} (95% {fit.interval[0]:.1f} to {fit.interval[1]:.1f}), S_min {fit.s_min:.1f}, "
          f"E_min {fit.e_min:.0f}" + (f", b* {study.b_star:.1f}" if study.b_star else ""))  # fmt: skip
    if args.write_to:
        write_batch_size(args.spec, max(1, round(fit.b_crit)), args.write_to)
        print(f"{args.write_to}: batch_size {max(1, round(fit.b_crit))}")
    text = json.dumps(study.to_json())
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


def _resume(args: argparse.Namespace) -> int:
    layout = SweepLayout(args.dir.resolve())
    record = SweepRecord.find(layout)
    if record is None or not layout.spec_file.is_file():
        raise SweepDirError(
            f"{args.dir}: not a sweep directory (no sweep.json and spec.yaml); start it with effsweep run"
        )
    spec = dataclasses.replace(load_spec(layout.spec_file), output_dir=layout.root, storage=record.storage)
    return _sweep(spec, args, args.tracking_uri or record.tracking_uri)


def _run(args: argparse.Namespace) -> int:
    return _sweep(_load(args), args, args.tracking_uri)


def _sweep(spec: SweepSpec, args: argparse.Namespace, tracking_uri: str | None) -> int:
    log_file = SweepLayout(spec.output_dir.resolve()).log_file
    with sweep_console(log_file, quiet=args.quiet, verbose=args.verbose):
        outcome = run_sweep(
            spec, address=args.address, tracking_override=tracking_uri, progress=ProgressBar("uniform order"),
            log_to_driver=args.verbose,
        )  # fmt: skip
    root = outcome.layout.root
    counts = outcome.results.counts()
    print()
    print(f"Trials: {len(outcome.results.trials)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    best = outcome.results.best()
    if best is not None:
        print(f"Best trial {best['trial_id']}: {OBJECTIVE} {best[OBJECTIVE]:.4f}")
        print("  " + "  ".join(f"{k}={_value(best.get(CONFIG_PREFIX + k))}" for k in outcome.record.knobs))
    print(f"Results: {root / 'results' / 'trials.parquet'}, {root / 'results' / 'metrics.parquet'}")
    print(f"All trials: effsweep results {root}")
    print(f"MLflow UI:  effsweep ui {root}")
    if outcome.interrupted:
        print(f"The sweep was interrupted; continue it with: effsweep resume {root}", file=sys.stderr)
        return 1
    if best is None:
        print(f"effsweep: no trial reached {OBJECTIVE}", file=sys.stderr)
        return 1
    return 0


def _value(value: object) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _select(args: argparse.Namespace) -> int:
    try:
        corpus_format = CorpusFormat(kind=args.format, fields=tuple(args.fields.split(",")) if args.fields else None)
        embedding = EmbeddingConfig(
            vector_size=args.vector_size,
            window=args.window,
            min_count=args.min_count,
            epochs=args.epochs if args.epochs == "auto" else int(args.epochs),
            seed=args.embedding_seed,
            pretrained=args.pretrained,
        )
        if not 0 < args.fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
    except (ValidationError, ValueError) as exc:
        print(f"effsweep select: {exc}", file=sys.stderr)
        return 2
    order = order_corpus(
        args.corpus,
        strategy=args.strategy,
        corpus_format=corpus_format,
        embedding=embedding,
        max_fraction=args.fraction,
        seed=args.seed,
        cache_dir=cache_dir(),
        progress=ProgressBar("ordering"),
    )
    order.save(args.out)
    # A random order ranks every document; ``ranked`` counts only those a uniform order ranked by distance.
    ranked = order.ranked if args.strategy == "uniform" else len(order.documents)
    print(f"{args.out}: {len(order.documents)} documents, {ranked} ranked by {args.strategy} selection")
    if order.ranked > 1:
        size = order.size(args.fraction)
        print(f"first {size}: h_min {order.distances[min(size, order.ranked) - 1]:.4f} (cosine distance)")
    return 0


def _spaces(args: argparse.Namespace) -> int:
    for path in ready_specs():
        spec = load_spec(path)
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
        print(f"{shown}  ({spec.trials} trials, {len(spec.knobs)} knobs): {description(path)}")
    return 0


def _results(args: argparse.Namespace) -> int:
    layout = SweepLayout(args.dir)
    record = SweepRecord.load(layout)
    results = read_results(layout.results_dir)
    if args.json:
        table = results.trials.head(args.top) if args.top else results.trials
        for row in table.to_dict(orient="records"):
            print(json.dumps(row, default=str))
    else:
        print(format_table(results.trials, record.knobs, args.top))
        importances = read_importances(layout.results_dir)
        if importances is not None:
            print("\n" + format_importances(importances))
    return 0


def _ui(args: argparse.Namespace) -> int:
    return serve_ui(SweepLayout(args.dir), host=args.host, port=args.port)
