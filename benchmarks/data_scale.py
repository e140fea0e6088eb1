"""Data at scale: the driver's and a trial's memory on a 1 GB text corpus.

Two figures, each measured in a fresh process:

- ``driver_peak_gb``: the peak resident memory of a process that prepares the
  corpus as a sweep's driver does (``prepare_sweep_data``: stream, tokenise
  into a token file, split, cut the validation windows), the cache empty.
  Target: under 3.
- ``trial_rss_ratio``: the peak resident memory of a process that receives the
  prepared ``SweepData`` pickled (as a trial receives it through Ray's object
  store) and trains ``--steps`` steps of the ``--model`` preset on the whole
  corpus, over the same on a 10 MB corpus (the corpus's first 10 MB). Target:
  at most 1.5.

The corpus is ``--corpus``, else one generated into a temporary folder: about
``--size-gb`` of documents of 3 to 12 sentences drawn with a seed from
gensim's Lee news corpus, so that documents read like text and differ.

Run: ``.venv/bin/python benchmarks/data_scale.py [--smoke]`` (under a minute
for 1 GB on two cores, with 2 GB of token file written to the temporary
folder); the last line printed is one JSON object. Figures and what they show
are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from memory import peak_rss_mib
from smoke import SMOKE_MODEL, add_smoke_flag

SMALL_MB = 10.0
SMOKE_GB, SMOKE_SMALL_MB, SMOKE_STEPS = 0.004, 0.4, 10  # 10 steps: the fewest a trial may plan
BATCH, EVAL_TOKENS = 16, 16384


def generate_corpus(path: Path, size_bytes: float, seed: int = 0) -> None:
    """About ``size_bytes`` of documents, one a line, each 3 to 12 sentences of gensim's Lee corpus drawn at random."""
    from trainables.data.corpus import gensim_corpus_dir

    text = (gensim_corpus_dir() / "lee_background.cor").read_text()
    sentences = np.array([s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()])
    rng = np.random.default_rng(seed)
    with path.open("w") as out:
        while out.tell() < size_bytes:
            counts = rng.integers(3, 13, size=2000)
            picks = iter(rng.integers(0, len(sentences), size=int(counts.sum())).tolist())
            out.write("".join(" ".join(sentences[next(picks)] for _ in range(n)) + "\n" for n in counts))


def head_of(corpus: Path, path: Path, size_bytes: float) -> None:
    """The first whole lines of ``corpus`` up to about ``size_bytes``."""
    with corpus.open("rb") as source, path.open("wb") as out:
        while out.tell() < size_bytes:
            line = source.readline()
            if not line:
                break
            out.write(line)


def measure_preparation(corpus: Path, cache: Path, data_file: Path, model: str) -> dict[str, Any]:
    """In this process: prepare ``corpus``, pickle the result to ``data_file``; peak memory and time."""
    from trainables.data.prepare import prepare_sweep_data
    from trainables.model import MODEL_PRESETS

    baseline = peak_rss_mib()
    started = time.perf_counter()
    data = prepare_sweep_data(
        str(corpus), val_fraction=0.1, seed=0, seq_len=MODEL_PRESETS[model]["seq_len"], eval_tokens=EVAL_TOKENS,
        cache_dir=cache,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    data_file.write_bytes(pickle.dumps(data))
    token_file = data.train.corpus.path
    return {
        "peak_gb": peak_rss_mib() / 1024,
        "baseline_gb": baseline / 1024,
        "prepare_s": seconds,
        "documents": data.train.corpus.n_documents,
        "train_tokens": data.train_tokens,
        "token_file_gb": token_file.stat().st_size / 2**30 if token_file else None,
        "token_dtype": str(data.train.corpus.tokens.dtype),
        "sweep_data_pickle_kb": data_file.stat().st_size / 1024,
    }


def measure_training(data_file: Path, model: str, steps: int) -> dict[str, Any]:
    """In this process: a trial's work on the pickled data, ``steps`` steps; peak memory and time."""
    import torch

    from trainables.config import TrialConfig
    from trainables.loop import train_lm
    from trainables.model import MODEL_PRESETS

    torch.set_num_threads(1)
    baseline = peak_rss_mib()
    data = pickle.loads(data_file.read_bytes())
    settings = {f"model.{k}": v for k, v in MODEL_PRESETS[model].items()}
    settings.update({"batch_size": BATCH, "budget.compute": steps * BATCH * settings["model.seq_len"]})
    settings["eval_every"] = steps
    reports: list[dict[str, Any]] = []
    started = time.perf_counter()
    train_lm(TrialConfig.from_flat(settings), data, reports.append)
    return {
        "peak_gb": peak_rss_mib() / 1024,
        "baseline_gb": baseline / 1024,
        "train_s": time.perf_counter() - started,
        "final_val_loss": reports[-1]["final_val_loss"],
    }


def _in_fresh_process(*arguments: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, check=False, cwd=Path(__file__).parent
    )
    if done.returncode:
        sys.exit(f"data_scale.py {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(corpus: Path | None, size_gb: float, small_mb: float, model: str, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="effsweep-data-scale-") as tmp:
        folder = Path(tmp)
        if corpus is None:
            corpus = folder / "corpus.txt"
            started = time.perf_counter()
            generate_corpus(corpus, size_gb * 2**30)
            print(f"generated {corpus.stat().st_size / 2**30:.2f} GB in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
        small = folder / "small.txt"
        head_of(corpus, small, small_mb * 2**20)
        figures: dict[str, Any] = {}
        for name, text in (("large", corpus), ("small", small)):
            data_file = folder / f"{name}.pkl"
            prepared = _in_fresh_process("--child", "prepare", str(text), str(folder / f"cache-{name}"),
                                         str(data_file), model)  # fmt: skip
            trained = _in_fresh_process("--child", "train", str(data_file), model, str(steps))
            figures[name] = {"corpus_gb": text.stat().st_size / 2**30, "prepared": prepared, "trained": trained}
            print(f"{name}: {json.dumps(figures[name])}", file=sys.stderr)
    large, little = figures["large"], figures["small"]
    return {
        "corpus_gb": large["corpus_gb"],
        "documents": large["prepared"]["documents"],
        "train_tokens": large["prepared"]["train_tokens"],
        "token_file_gb": large["prepared"]["token_file_gb"],
        "token_dtype": large["prepared"]["token_dtype"],
        "sweep_data_pickle_kb": large["prepared"]["sweep_data_pickle_kb"],
        "prepare_s": large["prepared"]["prepare_s"],
        "driver_peak_gb": large["prepared"]["peak_gb"],
        "driver_baseline_gb": large["prepared"]["baseline_gb"],
        "driver_peak_gb_small": little["prepared"]["peak_gb"],
        "small_corpus_mb": little["corpus_gb"] * 1024,
        "model": model,
        "steps": steps,
        "trial_peak_gb": large["trained"]["peak_gb"],
        "trial_peak_gb_small": little["trained"]["peak_gb"],
        "trial_baseline_gb": large["trained"]["baseline_gb"],
        "trial_rss_ratio": large["trained"]["peak_gb"] / little["trained"]["peak_gb"],
        "trial_train_s": large["trained"]["train_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help="a text corpus, one document a line (default: generated)")
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the generated corpus")
    parser.add_argument("--model", default="small", help="the model preset a trial trains")
    parser.add_argument("--steps", type=int, default=20, help="training steps a trial takes (at least 10)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # one measurement, in this fresh process
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            corpus, cache, data_file, model = rest
            print(json.dumps(measure_preparation(Path(corpus), Path(cache), Path(data_file), model)))
        else:
            data_file, model, steps = rest
            print(json.dumps(measure_training(Path(data_file), model, int(steps))))
        return
    if args.smoke:
        result = run(None, SMOKE_GB, SMOKE_SMALL_MB, SMOKE_MODEL, SMOKE_STEPS)
    else:
        result = run(args.corpus, args.size_gb, SMALL_MB, args.model, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
