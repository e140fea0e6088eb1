"""The spec's plain sections: the top level, ``data``, ``model``, ``resources`` and ``tracking``.

See docs/spec.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.spec.errors import add_errors, required, validate
from trainables.data.corpus import CorpusError, CorpusFormat, resolve_corpus
from trainables.data.tokenizer import TokenizerConfig
from trainables.model import MODEL_PRESETS, ModelConfig
from trainables.selection.embeddings import EmbeddingConfig


class Section(BaseModel):
    """A spec section: unknown fields are errors, and a validated section does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(Section):
    corpus: str
    format: Literal["auto", "lines", "paragraphs", "json", "jsonl", "parquet"] = "auto"
    fields: list[str] | None = Field(None, min_length=1, description="record fields joined into a document")
    val_fraction: float = Field(0.1, gt=0, le=0.5)
    seed: int = Field(0, ge=0)
    eval_tokens: int = Field(8192, ge=1, description="validation tokens scored at every report")
    tokenizer: TokenizerConfig = TokenizerConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    selection_seed: int = Field(0, ge=0, description="seeds the random selection order")

    def corpus_format(self) -> CorpusFormat:
        return CorpusFormat(kind=self.format, fields=tuple(self.fields) if self.fields else None)


class ModelSection(Section):
    size: Literal[tuple(MODEL_PRESETS)] = "small"  # type: ignore[valid-type]
    seq_len: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    d_model: int | None = None
    vocab_multiple: int | None = None


class ResourcesSection(Section):
    cpus: float = Field(1.0, gt=0, description="CPUs reserved per trial (per worker with several workers)")
    workers: int = Field(1, ge=1, description="data-parallel workers per trial; more than one runs under Ray Train")
    gpus: float = Field(0.0, ge=0, description="GPUs per worker; any runs the trial under Ray Train")

    @property
    def distributed(self) -> bool:
        """Whether trials run under a Ray Train ``TorchTrainer`` rather than as plain Tune functions."""
        return self.workers > 1 or self.gpus > 0


class TrackingSection(Section):
    uri: str | None = None
    experiment: str | None = None


class TopLevel(Section):
    """The spec's scalar fields; each section is read on its own, so one bad section hides no other."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    output_dir: str | None = None
    storage: str | None = None
    trials: int | None = Field(None, ge=1)
    concurrency: Literal["auto"] | int = "auto"
    data: Any = None
    model: Any = None
    budget: Any = None
    train: Any = None
    search: Any = None
    searcher: Any = None
    scheduler: Any = None
    resources: Any = None
    tracking: Any = None


def data_section(raw: Any, problems: list[str]) -> DataSection | None:
    """The ``data`` section, its corpus and pretrained vectors found on disk."""
    data = required(DataSection, raw, "data", problems)
    if isinstance(raw, Mapping) and isinstance(raw.get("corpus"), str):
        _check_corpus(raw["corpus"], problems)
    if data is not None and data.embedding.pretrained and not Path(data.embedding.pretrained).is_file():
        problems.append(f"data.embedding.pretrained: no such file: {data.embedding.pretrained}")
    return data


def _check_corpus(corpus: str, problems: list[str]) -> None:
    try:
        path = resolve_corpus(corpus)
    except CorpusError as exc:
        problems.append(f"data.corpus: {exc}")
        return
    if not path.is_file():
        problems.append(f"data.corpus: no such file: {path}")


def model_config(raw: Any, problems: list[str], vocab_size: int) -> ModelConfig | None:
    """The model a ``model`` section describes: a preset, with the fields it overrides, for ``vocab_size`` tokens
    (the tokenizer's)."""
    section = validate(ModelSection, raw or {}, "model", problems)
    if section is None:
        return None
    shape = MODEL_PRESETS[section.size] | section.model_dump(exclude={"size"}, exclude_none=True)
    shape["vocab_size"] = vocab_size
    try:
        return ModelConfig(**shape)
    except ValidationError as exc:
        add_errors(exc, "model", problems)
        return None
