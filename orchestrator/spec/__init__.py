"""The sweep spec: schema, loading, and errors that name their YAML path.

``load_spec`` either returns a ``SweepSpec`` or raises ``SpecError`` holding
every problem found, one ``path: message`` line each; it never stops at the
first. Knob values are checked against the trial's own schema
(``trainables.config.TrialConfig``), first one by one and then in the extreme
combinations of the space (every choice and both ends of every range), so a
sweep cannot start with a configuration its trials would reject.

Relative paths in a spec (``data.corpus``, ``output_dir``) are relative to
the directory the command runs in.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.mpl.fit import CurveError, read_fit, read_law
from orchestrator.mpl.pruner import DECISION_FRACTIONS
from search_spaces.build import DISTRIBUTIONS, Knob, combinations
from trainables.config import (
    SELF_RATED,
    SWEEP_LEVEL_SECTIONS,
    BudgetConfig,
    OptimizerConfig,
    TrialConfig,
    TrialField,
    flatten,
    trial_fields,
)
from trainables.data.corpus import CorpusError, CorpusFormat, resolve_corpus
from trainables.data.prepare import SelectionPlan
from trainables.model import MODEL_PRESETS, ModelConfig
from trainables.selection.embeddings import EmbeddingConfig

# Corner combinations checked at most; the first ones in spec order are taken.
MAX_COMBINATIONS_CHECKED = 20_000
MAX_COMBINATION_PROBLEMS = 5


class SpecError(Exception):
    """A spec that cannot run; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    corpus: str
    format: Literal["auto", "lines", "paragraphs", "json", "jsonl", "parquet"] = "auto"
    fields: list[str] | None = Field(None, min_length=1, description="record fields joined into a document")
    val_fraction: float = Field(0.1, gt=0, le=0.5)
    seed: int = Field(0, ge=0)
    eval_tokens: int = Field(8192, ge=1, description="validation tokens scored at every report")
    embedding: EmbeddingConfig = EmbeddingConfig()
    selection_seed: int = Field(0, ge=0, description="seeds the random selection order")

    def corpus_format(self) -> CorpusFormat:
        return CorpusFormat(kind=self.format, fields=tuple(self.fields) if self.fields else None)


class ModelSection(_Section):
    size: Literal[tuple(MODEL_PRESETS)] = "small"  # type: ignore[valid-type]
    seq_len: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    d_model: int | None = None


class SearcherSection(_Section):
    name: Literal["random", "grid", "tpe", "hypergrad"] = "random"
    seed: int = Field(0, ge=0)
    n_startup_trials: int | None = Field(None, ge=1, description="tpe: random trials before TPE takes over")
    chains: int = Field(4, ge=1, description="hypergrad: independent chains, each with its own seed and knob values")
    meta_steps: int = Field(10, ge=1, description="hypergrad: meta-iterations per chain at most")
    meta_lr: float = Field(0.05, gt=0, description="hypergrad: Adam's step on the log/logit hyperparameters")
    patience: int = Field(2, ge=1, description="hypergrad: meta-iterations the norm must stay grown to end a chain")
    growth: float = Field(5.0, gt=1, description="hypergrad: a chain ends when its meta-gradient norm exceeds this "
                          "many times its smallest")  # fmt: skip
    blocks: int = Field(10, ge=1, le=100, description="hypergrad: blocks of steps with their own rate and momentum")
    init_lr: float = Field(0.05, gt=0, description="hypergrad: every block's and group's first learning rate")
    init_momentum: float = Field(0.9, gt=0, lt=1, description="hypergrad: the first momentum")
    init_weight_decay: float = Field(1e-4, gt=0, description="hypergrad: the first L2 penalty per group")


class SchedulerSection(_Section):
    name: Literal["fifo", "asha", "mpl"] = "fifo"
    grace_fraction: float = Field(0.25, gt=0, lt=1, description="asha: share of the budget before the first cut")
    reduction_factor: float = Field(3.0, gt=1, description="asha")
    fractions: list[float] = Field(list(DECISION_FRACTIONS), min_length=1, description="mpl: decision points")
    margin: float = Field(0.0, ge=0, description="mpl: how much worse a trial's optimistic prediction must be")
    z: float = Field(1.64, gt=0, description="mpl: prediction interval half-width in standard errors")
    min_completed: int = Field(2, ge=1, description="mpl: trials to finish before any is stopped")
    prior: str | None = Field(
        None, description="mpl: an earlier sweep's folder or an 'effsweep mpl fit --json' file, to judge from the start"
    )

    @field_validator("fractions")
    @classmethod
    def _inside_the_run(cls, fractions: list[float]) -> list[float]:
        outside = [f for f in fractions if not 0 < f < 1]
        if outside:
            raise ValueError(f"decision points are shares of a trial's budget, in (0, 1); got {outside}")
        return fractions


# The settings each searcher (orchestrator.searchers) and scheduler (orchestrator.schedulers) reads
# besides its name. A sweep's summary, its parent-run params and identity, holds only these: another
# algorithm's settings change nothing the sweep does.
SEARCHER_SETTINGS: dict[str, tuple[str, ...]] = {
    "random": ("seed",),
    "grid": (),
    "tpe": ("seed", "n_startup_trials"),
    "hypergrad": ("seed", "chains", "meta_steps", "meta_lr", "patience", "growth", "blocks", "init_lr",
                  "init_momentum", "init_weight_decay"),
}  # fmt: skip
SCHEDULER_SETTINGS: dict[str, tuple[str, ...]] = {
    "fifo": (),
    "asha": ("grace_fraction", "reduction_factor"),
    "mpl": ("fractions", "margin", "z", "min_completed", "prior"),
}


class ResourcesSection(_Section):
    cpus: float = Field(1.0, gt=0, description="CPUs reserved per trial (per worker with several workers)")
    workers: int = Field(1, ge=1, description="data-parallel workers per trial; more than one runs under Ray Train")
    gpus: float = Field(0.0, ge=0, description="GPUs per worker; any runs the trial under Ray Train")

    @property
    def distributed(self) -> bool:
        """Whether trials run under a Ray Train ``TorchTrainer`` rather than as plain Tune functions."""
        return self.workers > 1 or self.gpus > 0


class TrackingSection(_Section):
    uri: str | None = None
    experiment: str | None = None


class _TopLevel(_Section):
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


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``train`` holds fixed trial keys; ``knobs`` the searched ones, in spec order."""

    name: str
    output_dir: Path
    data: DataSection
    model: ModelConfig
    budget: BudgetConfig
    train: Mapping[str, Any]
    knobs: tuple[Knob, ...]
    searcher: SearcherSection
    scheduler: SchedulerSection
    trials: int
    concurrency: int | None
    resources: ResourcesSection
    tracking: TrackingSection
    source: str
    storage: str | None = None  # trials' results and checkpoints (orchestrator.storage); None: DIR/tune

    def selection_plan(self) -> SelectionPlan:
        """The orders this sweep's trials can draw from, prepared once before any trial runs."""
        strategies = self._possible("selection.strategy")
        fractions = [float(f) for f in self._possible("selection.fraction")]
        return SelectionPlan(
            strategies=tuple(s for s in ("random", "uniform") if s in strategies),
            max_fraction=max(fractions),
            embedding=self.data.embedding,
            seed=self.data.selection_seed,
        )

    def _possible(self, key: str) -> tuple[Any, ...]:
        """Every value (or both ends of the range) a trial-config key can take in this sweep."""
        for knob in self.knobs:
            if knob.name == key:
                return knob.extremes()
        return (self.fixed_config()[key],)

    def fixed_config(self) -> dict[str, Any]:
        """Every trial-config key that no knob sets, with its value for this sweep."""
        return _fixed_config(self.model, self.budget, self.train, {k.name for k in self.knobs})

    def summary(self) -> dict[str, Any]:
        """The sweep's settings as flat scalars: its MLflow parent-run params and its identity.

        Of the searcher and scheduler, only the name and the settings that algorithm reads.
        """
        flat = flatten(
            {
                "data": self.data.model_dump(),
                "model": asdict(self.model),
                "budget": self.budget.model_dump(),
                "train": dict(self.train),
                "searcher": _used_settings(self.searcher, SEARCHER_SETTINGS),
                "scheduler": _used_settings(self.scheduler, SCHEDULER_SETTINGS),
                "resources": self.resources.model_dump(),
            }
        )
        flat.update(name=self.name, trials=self.trials, concurrency=self.concurrency or "auto")
        flat["search"] = ",".join(k.name for k in self.knobs)
        return flat

    def spec_hash(self) -> str:
        """Identity of the sweep: same hash, same trials (tracking and output place aside)."""
        knobs = [asdict(k) | {"when": {n: list(v) for n, v in k.when.items()}} for k in self.knobs]
        payload = json.dumps({"settings": self.summary(), "knobs": knobs}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _used_settings(
    section: SearcherSection | SchedulerSection, settings: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    """The section's name and the settings its named algorithm reads."""
    return section.model_dump(include={"name", *settings[section.name]})


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file (``-``: standard input); raise ``SpecError`` listing every problem."""
    path = Path(path)
    try:
        source = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: no such spec file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot be read ({exc})"]) from None
    try:
        raw = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{path}: not valid YAML{where}: {reason}"]) from None
    return parse_spec(raw, source)


def parse_spec(raw: Any, source: str = "") -> SweepSpec:
    """Validate an already-parsed spec mapping; ``source`` is its text (by default, the mapping as YAML)."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise SpecError([f"spec: must be a mapping of sections, got {type(raw).__name__}"])
    # A bad top-level field must not hide the problems in the sections.
    top = _validate(_TopLevel, raw, "", problems) or _TopLevel.model_construct(
        **{k: v for k, v in raw.items() if k in _TopLevel.model_fields}
    )
    if isinstance(top.concurrency, int) and top.concurrency < 1:
        problems.append(f"concurrency: must be 'auto' or at least 1 (got {top.concurrency})")

    data = _required(DataSection, top.data, "data", problems)
    if isinstance(top.data, Mapping) and isinstance(top.data.get("corpus"), str):
        _check_corpus(top.data["corpus"], problems)
    if data is not None and data.embedding.pretrained and not Path(data.embedding.pretrained).is_file():
        problems.append(f"data.embedding.pretrained: no such file: {data.embedding.pretrained}")
    budget = _required(BudgetConfig, top.budget, "budget", problems)
    model = _model_config(top.model, problems)
    searcher = _validate(SearcherSection, _named(top.searcher), "searcher", problems) or SearcherSection()
    scheduler = _validate(SchedulerSection, _named(top.scheduler), "scheduler", problems) or SchedulerSection()
    if scheduler.prior is not None:
        _check_prior(scheduler, problems)
    resources = _validate(ResourcesSection, top.resources or {}, "resources", problems)
    tracking = _validate(TrackingSection, top.tracking or {}, "tracking", problems)

    fields = trial_fields()
    train = _train_values(top.train, fields, problems)
    knobs = _knobs(top.search, fields, set(train), problems)

    if searcher.name in ("grid", "hypergrad"):
        for knob in knobs:
            if knob.kind != "choice":
                problems.append(
                    f"search.{knob.name}: the {searcher.name} searcher takes only choice knobs (got {knob.kind})"
                )
    trials = _trial_count(top.trials, searcher, knobs, problems)

    if model is not None and budget is not None:
        base = _fixed_config(model, budget, train, {k.name for k in knobs})
        _check_knob_values(knobs, base, problems)
        if resources is not None and resources.workers > 1:
            _check_workers(resources.workers, knobs, base, problems)
        if searcher.name == "hypergrad":
            _check_hypergrad(searcher, scheduler, resources, knobs, train, base, problems)
        # Combinations are only worth checking once every single value is fine.
        if not problems:
            _check_combinations(knobs, base, problems)
    if problems:
        raise SpecError(problems)
    concurrency = None if top.concurrency == "auto" else int(top.concurrency)
    output_dir = Path(top.output_dir) if top.output_dir else Path("sweeps") / top.name
    return SweepSpec(
        top.name, output_dir, data, model, budget, train, tuple(knobs), searcher, scheduler, trials,
        concurrency, resources, tracking, source or yaml.safe_dump(dict(raw), sort_keys=False), top.storage,
    )  # fmt: skip


def _validate(model: type[BaseModel], raw: Any, path: str, problems: list[str]) -> Any:
    """``model`` validated from ``raw``, or None with every problem added, named by its path."""
    if not isinstance(raw, Mapping):
        problems.append(f"{path or 'spec'}: must be a mapping, got {_show(raw)}")
        return None
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in (path, *error["loc"]) if p != "")
            problems.append(f"{where or 'spec'}: {_message(error)}")
        return None


def _required(model: type[BaseModel], raw: Any, path: str, problems: list[str]) -> Any:
    if raw is None:
        problems.append(f"{path}: required section is missing")
        return None
    return _validate(model, raw, path, problems)


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, (str, int, float, bool)):
        message += f" (got {_show(value)})"
    return message


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _named(raw: Any) -> Any:
    """``searcher: tpe`` is short for ``searcher: {name: tpe}``."""
    if raw is None:
        return {}
    return {"name": raw} if isinstance(raw, str) else raw


def _check_prior(scheduler: SchedulerSection, problems: list[str]) -> None:
    if scheduler.name != "mpl":
        problems.append(f"scheduler.prior: only the mpl scheduler takes a prior (this one is {scheduler.name})")
        return
    try:
        fit = read_fit(Path(scheduler.prior))
    except CurveError as exc:
        problems.append(f"scheduler.prior: {exc}")
        return
    if "L0" not in fit.shared:
        problems.append(f"scheduler.prior: {scheduler.prior} fits L0 per curve; a prior needs one L0 for all")


def _check_corpus(corpus: str, problems: list[str]) -> None:
    try:
        path = resolve_corpus(corpus)
    except CorpusError as exc:
        problems.append(f"data.corpus: {exc}")
        return
    if not path.is_file():
        problems.append(f"data.corpus: no such file: {path}")


def _model_config(raw: Any, problems: list[str]) -> ModelConfig | None:
    section = _validate(ModelSection, raw or {}, "model", problems)
    if section is None:
        return None
    shape = MODEL_PRESETS[section.size] | section.model_dump(exclude={"size"}, exclude_none=True)
    try:
        return ModelConfig(**shape)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            problems.append(f"model{'.' + field if field else ''}: {_message(error)}")
        return None


def _train_values(raw: Any, fields: Mapping[str, TrialField], problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"train: must be a mapping of trial settings, got {_show(raw)}")
        return {}
    values = {}
    for key, value in flatten(raw).items():
        if key == MPL_FIT_KEY:
            values.update(_mpl_law_values(value, problems))
            continue
        problem = _key_problem(key, fields)
        if problem:
            problems.append(f"train.{key}: {problem}")
        else:
            values[key] = value
    return values


# A spec names the fit an ``mpl_optimal`` schedule optimises; trials get the law's parameters.
MPL_FIT_KEY = "schedule.mpl_fit"


def _mpl_law_values(path: Any, problems: list[str]) -> dict[str, float]:
    if not isinstance(path, str):
        problems.append(f"train.{MPL_FIT_KEY}: must be the path of an MPL fit file or sweep folder, got {_show(path)}")
        return {}
    try:
        law = read_law(Path(path))
    except CurveError as exc:
        problems.append(f"train.{MPL_FIT_KEY}: {exc}")
        return {}
    return {f"schedule.mpl_law.{k}": v for k, v in law.as_dict().items()}


def _key_problem(key: str, fields: Mapping[str, TrialField]) -> str | None:
    section = key.split(".")[0]
    if section in SWEEP_LEVEL_SECTIONS:
        return f"fixed for the whole sweep; set it under {section}:"
    if key not in fields:
        known = ", ".join(k for k in fields if k.split(".")[0] not in SWEEP_LEVEL_SECTIONS)
        return f"unknown trial setting; known: {known}"
    return None


def _knobs(raw: Any, fields: Mapping[str, TrialField], fixed: set[str], problems: list[str]) -> list[Knob]:
    if raw is None:
        problems.append("search: required section is missing (a sweep needs at least one knob)")
        return []
    if not isinstance(raw, Mapping) or not raw:
        problems.append("search: must map knob names to distributions, e.g. peak_lr: {loguniform: [1e-4, 1e-2]}")
        return []
    knobs: list[Knob] = []
    for name, spec in raw.items():
        path = f"search.{name}"
        problem = _key_problem(str(name), fields)
        if problem:
            problems.append(f"{path}: {problem}")
            continue
        if name in fixed:
            problems.append(f"{path}: also fixed under train.{name}; keep one of the two")
            continue
        knob = _knob(str(name), spec, fields[name], {k.name: k for k in knobs}, problems)
        if knob is not None:
            knobs.append(knob)
    return knobs


def _knob(name: str, spec: Any, field: TrialField, earlier: Mapping[str, Knob], problems: list[str]) -> Knob | None:
    path = f"search.{name}"
    if not isinstance(spec, Mapping):
        problems.append(f"{path}: must be a distribution such as {{choice: [...]}} or {{uniform: [low, high]}}")
        return None
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    unknown = [str(k) for k in spec if k not in (*DISTRIBUTIONS, "when", "log")]
    if unknown:
        problems.append(
            f"{path}: unknown key(s) {', '.join(unknown)}; use one of {', '.join(DISTRIBUTIONS)}, when, log"
        )
    if len(kinds) != 1:
        got = ", ".join(kinds) or "none"
        problems.append(f"{path}: give exactly one distribution of {', '.join(DISTRIBUTIONS)} (got {got})")
        return None
    kind = kinds[0]
    before = len(problems)
    if spec.get("log") is not None and (kind != "int" or not isinstance(spec["log"], bool)):
        problems.append(f"{path}.log: only an int knob takes log, as true or false")
    when = _when(path, spec.get("when"), earlier, problems)
    compatible = {"categorical": ("choice",), "int": ("choice", "int"), "float": ("choice", "uniform", "loguniform")}
    if kind not in compatible[field.kind]:
        options = " or ".join(compatible[field.kind])
        problems.append(f"{path}: takes {_kind_words(field)}; use {options} (got {kind})")
        return None
    if kind == "choice":
        values = _choices(path, spec[kind], field, problems)
        return Knob(name, "choice", values=values, when=when) if len(problems) == before else None
    bounds = _bounds(path, spec[kind], kind, problems)
    if bounds is None or len(problems) != before:
        return None
    return Knob(name, kind, low=bounds[0], high=bounds[1], log=bool(spec.get("log")), when=when)


def _kind_words(field: TrialField) -> str:
    if field.kind == "categorical":
        return "one of " + ", ".join(map(str, field.choices))
    return "integers" if field.kind == "int" else "real numbers"


def _choices(path: str, raw: Any, field: TrialField, problems: list[str]) -> tuple[Any, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{path}.choice: must be a non-empty list of values")
        return ()
    values = []
    for value in raw:
        coerced = _coerce(value, field)
        if coerced is None:
            problems.append(f"{path}.choice: {_show(value)} is not {_kind_words(field)}")
        else:
            values.append(coerced)
    if len(set(map(repr, values))) != len(values):
        problems.append(f"{path}.choice: lists a value more than once")
    return tuple(values)


def _coerce(value: Any, field: TrialField) -> Any:
    """``value`` as the field's type, or None when it is not one. YAML reads ``3e-4`` as a string."""
    if field.kind == "categorical":
        return value if value in field.choices else None
    if isinstance(value, bool):
        return None
    if field.kind == "int":
        number = _number(value)
        return int(number) if number is not None and float(number).is_integer() else None
    number = _number(value)
    return float(number) if number is not None else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _bounds(path: str, raw: Any, kind: str, problems: list[str]) -> tuple[float, float] | None:
    if not isinstance(raw, list) or len(raw) != 2:
        problems.append(f"{path}: must be [low, high]")
        return None
    low, high = (_number(v) for v in raw)
    if low is None or high is None:
        problems.append(f"{path}: low and high must be finite numbers (got {raw})")
        return None
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        problems.append(f"{path}: low and high must be integers (got {raw})")
        return None
    if not low < high:
        problems.append(f"{path}: low must be below high (got {low:g} and {high:g})")
        return None
    if kind == "loguniform" and low <= 0:
        problems.append(f"{path}: low must be above 0 for a log scale (got {low:g})")
        return None
    return float(low), float(high)


def _when(path: str, raw: Any, earlier: Mapping[str, Knob], problems: list[str]) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        problems.append(f"{path}.when: must map earlier knobs to the value(s) that activate this one")
        return {}
    when = {}
    for name, allowed in raw.items():
        where = f"{path}.when.{name}"
        parent = earlier.get(name)
        if parent is None:
            problems.append(f"{where}: must name a choice knob listed earlier under search")
            continue
        if parent.kind != "choice":
            problems.append(f"{where}: can only test a choice knob ({name} is {parent.kind})")
            continue
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        missing = [v for v in values if v not in parent.values]
        if missing:
            problems.append(f"{where}: {', '.join(map(_show, missing))} is not among {name}'s choices")
            continue
        when[name] = values
    return when


def _trial_count(trials: int | None, searcher: SearcherSection, knobs: list[Knob], problems: list[str]) -> int:
    if searcher.name == "hypergrad":
        most = searcher.chains * searcher.meta_steps
        if trials is not None and trials != most:
            problems.append(
                f"trials: the hypergrad searcher runs at most searcher.chains x searcher.meta_steps = {most} "
                "meta-iterations; drop trials or set it to that"
            )
        return most
    if searcher.name != "grid":
        return trials or 8
    size = sum(1 for _ in combinations(knobs, lambda knob: knob.values)) if knobs else 0
    if trials is not None and trials != size:
        problems.append(
            f"trials: the grid searcher runs each of its {size} points once; drop trials or set it to {size}"
        )
    return size


def _fixed_config(
    model: ModelConfig, budget: BudgetConfig, train: Mapping[str, Any], searched: set[str]
) -> dict[str, Any]:
    defaults = TrialConfig.model_construct(budget=budget).model_dump(by_alias=True)
    flat = flatten(defaults) | flatten({"model": asdict(model)}) | dict(train)
    return {key: value for key, value in flat.items() if key not in searched}


def _trial_problems(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(flat key, message) for every reason ``TrialConfig`` rejects ``config``."""
    try:
        TrialConfig.from_flat(config)
    except ValidationError as exc:
        return [(".".join(str(p) for p in e["loc"]), _message(e)) for e in exc.errors()]
    return []


def _check_knob_values(knobs: list[Knob], base: Mapping[str, Any], problems: list[str]) -> None:
    for key, message in _trial_problems(base):
        if key in base:  # a fixed leaf value; knob keys are not in base
            problems.append(f"{_fixed_path(key)}: {message}")
    for knob in knobs:
        for value in knob.extremes():
            for key, message in _trial_problems({**base, knob.name: value}):
                if key == knob.name:
                    problems.append(f"search.{knob.name}: {message}")


def _check_workers(workers: int, knobs: list[Knob], base: Mapping[str, Any], problems: list[str]) -> None:
    """Every trial must split its batch evenly, and use a rule whose step does not depend on the worker's rows."""
    possible = {k.name: (k.extremes(), f"search.{k.name}") for k in knobs}
    defaults = {"optimizer.name": OptimizerConfig().name, "batch_size": TrialConfig.model_fields["batch_size"].default}
    fixed = {**defaults, **base}
    for key in ("optimizer.name", "batch_size"):
        possible.setdefault(key, ((fixed[key],), _fixed_path(key)))
    values, where = possible["optimizer.name"]
    for rule in sorted(set(values) & set(SELF_RATED)):
        problems.append(f"{where}: {rule} chooses its rate from the loss and runs on one worker, not {workers}")
    values, where = possible["batch_size"]
    for size in values:
        if int(size) % workers:
            problems.append(f"{where}: batch size {size} does not divide among resources.workers ({workers})")


# What the hypergrad searcher learns itself, or what the reversible trainer does not do.
_HYPERGRAD_OWNS = ("peak_lr", "weight_decay", "lr_scaling", "grad_clip", "optimizer.", "schedule.", "patch.",
                   "target_loss", "gns")  # fmt: skip


def _check_hypergrad(
    searcher: SearcherSection,
    scheduler: SchedulerSection,
    resources: ResourcesSection | None,
    knobs: list[Knob],
    train: Mapping[str, Any],
    base: Mapping[str, Any],
    problems: list[str],
) -> None:
    """The reversible trainer runs SGD with momentum at token level on one worker, every meta-iteration to the end."""
    owned = [f"search.{k.name}" for k in knobs if k.name.startswith(_HYPERGRAD_OWNS) or k.name == "seed"]
    owned += [f"train.{key}" for key in train if key.startswith(_HYPERGRAD_OWNS) or key == "seed"]
    for where in owned:
        problems.append(
            f"{where}: the hypergrad searcher sets this itself or does without (rates, momentum and weight decay "
            "are learned, the optimizer is reversible SGD with momentum at token level, each chain has its own "
            "seed, and every meta-iteration trains its whole budget); drop it"
        )
    if scheduler.name != "fifo":
        problems.append(f"scheduler.name: the hypergrad searcher needs every meta-iteration to finish; use fifo "
                        f"(got {scheduler.name})")  # fmt: skip
    if resources is not None and resources.distributed:
        problems.append("resources: the reversible trainer runs on one CPU worker; drop workers and gpus")
    default_batch = TrialConfig.model_fields["batch_size"].default
    sizes = next((k.extremes() for k in knobs if k.name == "batch_size"), (base.get("batch_size", default_batch),))
    fewest = min(base["budget.compute"] // (int(b) * base["model.seq_len"]) for b in sizes)
    if fewest < searcher.blocks:
        problems.append(
            f"searcher.blocks: {searcher.blocks} blocks need at least as many steps, but budget.compute gives "
            f"{fewest:g} at the largest batch size"
        )


def _fixed_path(key: str) -> str:
    return key if key.split(".")[0] in SWEEP_LEVEL_SECTIONS else f"train.{key}"


def _check_combinations(knobs: list[Knob], base: Mapping[str, Any], problems: list[str]) -> None:
    """Reject a space whose extreme combinations a trial would refuse (e.g. too few steps)."""
    seen: set[str] = set()
    bad = 0
    for point in itertools.islice(combinations(knobs, Knob.extremes), MAX_COMBINATIONS_CHECKED):
        for key, message in _trial_problems({**base, **point}):
            if message in seen:
                continue
            seen.add(message)
            bad += 1
            if bad > MAX_COMBINATION_PROBLEMS:
                continue
            where = f" ({key})" if key else ""
            values = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            problems.append(f"search: the combination {values} is invalid{where}: {message}")
    if bad > MAX_COMBINATION_PROBLEMS:
        problems.append(f"search: {bad - MAX_COMBINATION_PROBLEMS} more invalid combinations not shown")
