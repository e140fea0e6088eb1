"""Keys a spec's ``train`` section may set that no trial reads, each read into the trial keys it stands for.

See docs/spec.md.
"""

from __future__ import annotations

# key -> "module:function" (imported only when a spec sets the key): the function takes the key's value and
# returns the trial keys and values it stands for, or raises ValueError naming what is wrong with it.
TRAIN_KEYS: dict[str, str] = {
    "schedule.mpl_fit": "orchestrator.mpl.settings:law_values",
}
