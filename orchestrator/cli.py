"""The ``effsweep`` command. Each subcommand is thin and calls one function elsewhere.

Exit codes: 0 success, 1 a run that could not finish (bad corpus, sweep
directory conflict, no trial completed), 2 a spec or usage problem.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from ray.job_submission import JobStatus, JobSubmissionClient
from tqdm import tqdm

from orchestrator.batch_study import UnreachableTarget, run_batch_study, write_batch_size
from orchestrator.layout import SweepDirError, SweepLayout, SweepRecord
from orchestrator.mpl import Curve, CurveError, fit_and_predict, fit_mpl, read_fitted_curves
from orchestrator.ordering import order_corpus
from orchestrator.plots import plot_mpl
from orchestrator.results import CONFIG_PREFIX, format_table, read_results
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.submit import job_rows, submit_sweep
from orchestrator.sweep import cache_dir, run_sweep
from orchestrator.ui import serve_ui
from search_spaces.catalog import description, ready_specs
from trainables.corpus import CorpusError, CorpusFormat
from trainables.embeddings import EmbeddingConfig
from trainables.loop import OBJECTIVE


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a sweep spec on local Ray (or a cluster with --address)")
    run.add_argument("spec", type=Path)
    _add_address(run)
    run.add_argument("--output", type=Path, help="sweep directory (default: the spec's output_dir, else sweeps/NAME)")
    run.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, the spec, or SQLite in the sweep directory)",
    )
    run.add_argument("--storage", help="trials' results and checkpoints: a shared path or s3://BUCKET/PATH")
    run.add_argument("--quiet", action="store_true", help="no line per trial event, only the summary")
    run.set_defaults(command=_run)

    submit = commands.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray Job")
    submit.add_argument("spec", type=Path)
    submit.add_argument("--address", required=True, help="the cluster's job server, e.g. http://HEAD:8265")
    submit.add_argument(
        "--output", help="sweep directory every node sees (shared filesystem) (default: the spec's output_dir)"
    )
    submit.add_argument("--tracking-uri", help="MLflow tracking URI for the job (default: MLFLOW_TRACKING_URI here)")
    submit.add_argument("--storage", help="trials' results and checkpoints: a shared path or s3://BUCKET/PATH")
    submit.add_argument("--name", help="job id to use (default: Ray chooses one)")
    submit.add_argument("--wait", action="store_true", help="follow the job's log until it finishes")
    submit.set_defaults(command=_submit)

    jobs = commands.add_parser("jobs", help="list, follow or stop the sweeps submitted to a cluster")
    jobs_commands = jobs.add_subparsers(required=True, metavar="ACTION")
    for action, summary in (
        ("list", "every job, newest first"),
        ("status", "a job's status"),
        ("logs", "a job's log (--follow: until it finishes)"),
        ("stop", "stop a job"),
    ):
        sub = jobs_commands.add_parser(action, help=summary)
        sub.add_argument("--address", required=True, help="the cluster's job server, e.g. http://HEAD:8265")
        if action != "list":
            sub.add_argument("job")
        if action == "logs":
            sub.add_argument("--follow", action="store_true")
        sub.set_defaults(command=_jobs, action=action)

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted sweep from its directory",
        description="Reads DIR/spec.yaml and continues the sweep in DIR: finished trials stay finished, "
        "unfinished and errored ones run again (from their last checkpoint where they have one), into the "
        "same MLflow runs.",
    )
    resume.add_argument("dir", type=Path)
    _add_address(resume)
    resume.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the sweep used)")
    resume.add_argument("--quiet", action="store_true", help="no line per trial event, only the summary")
    resume.set_defaults(command=_resume)

    cbs = commands.add_parser(
        "cbs",
        help="find the critical batch size: steps to a target loss against batch size",
        description="Runs the spec's trial at several batch sizes to a target validation loss, refines around "
        "the knee and fits S(b) = S_min (1 + B_crit / b); prints a table and one JSON object last.",
    )
    cbs.add_argument("spec", type=Path)
    cbs.add_argument("--target", type=float, help="target validation loss (default: a pilot run picks it)")
    cbs.add_argument("--sizes", help="comma-separated batch sizes of the first round (default: powers of two)")
    cbs.add_argument("--output", type=Path, help="study directory (default: the spec's output_dir)")
    _add_address(cbs)
    cbs.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON object to OUT")
    cbs.add_argument("--write-to", type=Path, metavar="SPEC", help="write the spec with the found batch size")
    cbs.set_defaults(command=_cbs)

    validate = commands.add_parser("validate", help="check a spec and list every problem")
    validate.add_argument("spec", type=Path)
    validate.set_defaults(command=_validate)

    results = commands.add_parser("results", help="trials of a sweep, best first")
    results.add_argument("dir", type=Path)
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
    select.add_argument("--strategy", choices=["uniform", "random"], default="uniform")
    select.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    select.add_argument("--fraction", type=float, default=1.0, help="rank greedily up to this share (uniform)")
    select.add_argument("--format", default="auto", help="auto, lines, paragraphs, json, jsonl or parquet")
    select.add_argument("--fields", help="comma-separated record fields joined into a document")
    select.add_argument("--seed", type=int, default=0, help="seed of a random order")
    for name, default in (("vector-size", 100), ("window", 5), ("min-count", 2)):
        select.add_argument(f"--{name}", type=int, default=default, help=f"Word2Vec {name} (default {default})")
    select.add_argument("--epochs", default="auto", help="Word2Vec passes, or auto (about 3M word occurrences)")
    select.add_argument("--embedding-seed", type=int, default=0, help="Word2Vec seed")
    select.add_argument("--pretrained", help="a KeyedVectors file to use instead of training Word2Vec")
    select.set_defaults(command=_select)

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

    spaces = commands.add_parser("spaces", help="list the ready sweep specs that ship with effsweep")
    spaces.set_defaults(command=_spaces)

    ui = commands.add_parser("ui", help="serve the MLflow UI for a sweep")
    ui.add_argument("dir", type=Path)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, help="default: a free port")
    ui.set_defaults(command=_ui)
    return parser


def _add_address(command: argparse.ArgumentParser) -> None:
    """The cluster to join, for the commands that run trials."""
    command.add_argument("--address", help="Ray cluster address (default: start Ray locally)")


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


def _submit(args: argparse.Namespace) -> int:
    client, job_id = submit_sweep(
        args.spec, args.address, output=args.output, tracking_uri=args.tracking_uri, storage=args.storage,
        name=args.name,
    )  # fmt: skip
    print(f"Submitted job {job_id} to {args.address}")
    print(f"Follow it: effsweep jobs logs {job_id} --follow --address {args.address}")
    if not args.wait:
        return 0
    _follow(client, job_id)
    status = client.get_job_status(job_id)
    print(f"Job {job_id}: {status.value}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def _jobs(args: argparse.Namespace) -> int:
    client = JobSubmissionClient(args.address)
    if args.action == "list":
        for row in job_rows(client):
            print(f"{row['job']:40} {row['status']:10} {row['spec']:20} {row['output']}")
    elif args.action == "status":
        print(client.get_job_status(args.job).value)
    elif args.action == "logs" and args.follow:
        _follow(client, args.job)
    elif args.action == "logs":
        print(client.get_job_logs(args.job), end="")
    else:
        stopped = client.stop_job(args.job)
        print(f"Job {args.job}: {'stopping' if stopped else 'already finished'}")
    return 0


def _follow(client: JobSubmissionClient, job_id: str) -> None:
    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())


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
    progress = logging.getLogger("effsweep.progress")
    progress.setLevel(logging.WARNING if args.quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    progress.addHandler(handler)
    progress.propagate = False
    outcome = run_sweep(
        spec, address=args.address, tracking_override=tracking_uri, progress=ProgressBar("uniform order")
    )
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
    print(f"{args.out}: {len(order.documents)} documents, {order.ranked} ranked by {args.strategy} selection")
    if order.ranked > 1:
        size = order.size(args.fraction)
        print(f"first {size}: h_min {order.distances[min(size, order.ranked) - 1]:.4f} (cosine distance)")
    return 0


class ProgressBar:
    """A terminal progress bar for ``Progress`` callbacks, opened on the first call."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.label, unit="doc", file=sys.stderr)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()


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
    return 0


def _ui(args: argparse.Namespace) -> int:
    return serve_ui(SweepLayout(args.dir), host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
