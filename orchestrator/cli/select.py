"""``effsweep select``: a corpus put in data-selection order (uniform or random), written as Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``select`` to the ``effsweep`` parser's subcommands."""
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


def _select(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from orchestrator.cli.console import ProgressBar
    from orchestrator.selection.select_command import order_corpus
    from orchestrator.user_cache import cache_dir
    from trainables.data.corpus import CorpusFormat
    from trainables.selection.embeddings import EmbeddingConfig

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
