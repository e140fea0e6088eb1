"""``effsweep submit`` and ``effsweep jobs``: sweeps run as Ray Jobs on a cluster, and following them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

JOB_SERVER_HELP = "the cluster's job server, e.g. http://HEAD:8265"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``submit`` and ``jobs`` to the ``effsweep`` parser's subcommands."""
    submit = commands.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray Job")
    submit.add_argument("spec", type=Path, help="the sweep spec (YAML); it travels with the job")
    submit.add_argument("--address", required=True, help=JOB_SERVER_HELP)
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
        sub.add_argument("--address", required=True, help=JOB_SERVER_HELP)
        if action != "list":
            sub.add_argument("job", help="the job's id, as submit printed it or jobs list shows it")
        if action == "logs":
            sub.add_argument("--follow", action="store_true", help="keep printing the log until the job ends")
        sub.set_defaults(command=_jobs, action=action)


def _submit(args: argparse.Namespace) -> int:
    from ray.job_submission import JobStatus

    from orchestrator.submit import submit_sweep

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
    from ray.job_submission import JobSubmissionClient

    from orchestrator.submit import job_rows

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
    import asyncio

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
