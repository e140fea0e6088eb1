"""Draw every learning-rate schedule over one run: ``.venv/bin/python docs/plot_schedules.py``.

Writes ``docs/img/schedules.png``: 1,000 steps at batch 16 x 128 tokens, peak
3e-3, each family at its defaults (WSD with each decay shape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from trainables.schedules import parse_schedule

STEPS, PEAK, BATCH, TOKENS = 1000, 3e-3, 16, 16 * 128
SHOWN = [
    ("constant", {}),
    ("cosine", {}),
    ("wsd, linear decay", {"name": "wsd", "decay_shape": "linear"}),
    ("wsd, cosine decay", {"name": "wsd", "decay_shape": "cosine"}),
    ("wsd, exponential decay", {"name": "wsd", "decay_shape": "exp"}),
    ("two_step", {}),
    ("power", {}),
    ("inverse_power", {}),
    ("explore_converge", {}),
    ("one_cycle", {}),
]


def main() -> None:
    fig = Figure(figsize=(11, 12), dpi=100)
    axes = fig.subplots(4, 3, sharex=True).ravel()
    step = np.arange(STEPS)
    for ax in axes[len(SHOWN) :]:
        ax.set_visible(False)
    for ax, (title, params) in zip(axes, SHOWN, strict=False):
        cfg = parse_schedule({"name": title} | params)
        ax.plot(step, PEAK * cfg.multipliers(STEPS, peak=PEAK, batch_size=BATCH, tokens_per_step=TOKENS))
        ax.set_title(title)
        ax.set_ylim(0, PEAK * 1.08)
        ax.grid(alpha=0.3)
        momenta = cfg.momenta(STEPS)
        if momenta is not None:
            twin = ax.twinx()
            twin.plot(step, momenta, color="tab:orange", linestyle="--")
            twin.set_ylabel("momentum (dashed)")
    for ax in axes[len(SHOWN) - 3 : len(SHOWN)]:
        ax.set_xlabel("step")
    for ax in axes[::3]:
        ax.set_ylabel("learning rate")
    fig.suptitle(f"Every schedule over one run of {STEPS} steps (defaults, peak {PEAK})")
    fig.tight_layout()
    path = Path(__file__).parent / "img" / "schedules.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(path)


if __name__ == "__main__":
    main()
