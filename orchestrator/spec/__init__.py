"""The sweep spec: its sections, and loading it with every problem named by its YAML path.

``load_spec`` either returns a ``SweepSpec`` or raises ``SpecError`` holding every problem found,
one ``path: message`` line each. See docs/spec.md.
"""

from orchestrator.spec.errors import SpecError
from orchestrator.spec.loading import SweepSpec, load_spec, parse_spec
from orchestrator.spec.sections import DataSection, ModelSection, ResourcesSection, TrackingSection
from orchestrator.spec.settings import AlgorithmSection, SchedulerSection, SearcherSection, SpecContext

__all__ = [
    "AlgorithmSection",
    "DataSection",
    "ModelSection",
    "ResourcesSection",
    "SchedulerSection",
    "SearcherSection",
    "SpecContext",
    "SpecError",
    "SweepSpec",
    "TrackingSection",
    "load_spec",
    "parse_spec",
]
