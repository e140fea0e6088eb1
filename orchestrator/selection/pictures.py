"""Pictures of a trial's training subset against the whole training corpus, for MLflow.

Once per sweep the driver saves a 2-D PCA projection of the training
documents' embeddings and the selection orders in ``DIR/selection/``; when a
trial starts, the tracking callback draws its subset there (once per distinct
subset: trials sharing a strategy and size share the picture).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from trainables.data.prepare import SweepData
from trainables.selection.embeddings import embedded
from trainables.selection.orderings import SelectionOrder

# More points than this per layer only blacken the picture and slow the driver.
MAX_POINTS = 20_000


class SelectionPictures:
    """Draws subsets of the training corpus in its 2-D PCA plane.

    Example:
        >>> import tempfile
        >>> from trainables.selection.orderings import random_order
        >>> folder = Path(tempfile.mkdtemp())
        >>> points = np.random.default_rng(0).normal(size=(50, 2))
        >>> pictures = SelectionPictures(folder, points, {"random": random_order(50, seed=0)})
        >>> pictures.draw("random", 0.2).name
        'random-10.png'
    """

    def __init__(self, folder: Path, plane: np.ndarray, orders: dict[str, SelectionOrder]) -> None:
        self.folder = folder
        self.plane = plane
        self.orders = orders

    @classmethod
    def save(cls, folder: Path, data: SweepData) -> None:
        """Store what the pictures need, if the sweep selects by embeddings."""
        if data.embeddings is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "plane.npy", _pca_plane(data.embeddings))
        for strategy, order in data.orders.items():
            order.save(folder / f"{strategy}.parquet")

    @classmethod
    def load(cls, folder: Path) -> SelectionPictures | None:
        if not (folder / "plane.npy").is_file():
            return None
        orders = {path.stem: SelectionOrder.load(path) for path in sorted(folder.glob("*.parquet"))}
        return cls(folder, np.load(folder / "plane.npy"), orders)

    def draw(self, strategy: str, fraction: float) -> Path | None:
        """PNG of the subset a trial with this selection trains on (``full``: all of it); None if unknown."""
        order = self.orders.get(strategy)
        if order is None and strategy != "full":
            return None
        count = len(self.plane) if order is None else order.size(fraction)
        path = self.folder / "pictures" / f"{strategy}-{count}.png"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        chosen = np.zeros(len(self.plane), dtype=bool)
        chosen[slice(None) if order is None else order.prefix(fraction)] = True
        rng = np.random.default_rng(0)
        fig = Figure(figsize=(6, 5), dpi=100)
        ax = fig.add_subplot()
        size = float(np.clip(3000 / len(self.plane), 1, 12))  # small corpora get visible dots
        layers = ((~chosen, {"c": "0.75", "s": size, "label": "corpus"}), (chosen, {"c": "tab:red", "s": 2 * size}))
        for mask, style in layers:
            index = np.flatnonzero(mask & np.isfinite(self.plane[:, 0]))
            if len(index) > MAX_POINTS:
                index = np.sort(rng.choice(index, MAX_POINTS, replace=False))
            ax.scatter(self.plane[index, 0], self.plane[index, 1], linewidths=0, **style)
        ax.collections[-1].set_label(f"{strategy} subset")
        ax.set_title(f"{strategy} {fraction:.0%}: {count} of {len(self.plane)} training documents")
        ax.set_xlabel("first principal component")
        ax.set_ylabel("second principal component")
        ax.legend(loc="upper right", markerscale=2)
        fig.tight_layout()
        fig.savefig(path)
        return path


def _pca_plane(embeddings: np.ndarray, sample: int = 50_000) -> np.ndarray:
    """Each document's coordinates on the first two principal components; NaN without an embedding."""
    has_vector = embedded(embeddings)
    vectors = embeddings[has_vector].astype(np.float64)
    rows = np.random.default_rng(0).choice(len(vectors), min(sample, len(vectors)), replace=False)
    mean = vectors[rows].mean(axis=0)
    _, _, basis = np.linalg.svd(vectors[rows] - mean, full_matrices=False)
    plane = np.full((len(embeddings), 2), np.nan, dtype=np.float32)
    plane[has_vector] = (vectors - mean) @ basis[:2].T
    return plane
