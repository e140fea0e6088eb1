"""Where a sweep's trials keep their results and checkpoints: a path every node sees, or S3.

By default Tune's experiment lives in the sweep directory (``DIR/tune``),
which is enough on one machine. On several machines every node must reach
it: a shared filesystem mounted at the same path everywhere, or an
S3-compatible bucket (``storage: s3://BUCKET/PATH`` in the spec or
``--storage``), reached through ``pyarrow.fs`` with the credentials in
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and, for MinIO and the like,
the endpoint in ``AWS_ENDPOINT_URL``. The credentials travel with the
filesystem object to the trials, so worker nodes need no environment of
their own.

``check_shared`` fails a multi-node sweep at once when a local storage path
is not the same folder on every node, instead of when its first trial
cannot write there.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.layout import SweepDirError


@dataclass(frozen=True)
class TrialStorage:
    """Tune's ``storage_path`` and, for a bucket, the ``storage_filesystem`` that reaches it.

    Example:
        >>> TrialStorage.resolve(None, Path("/sweeps/demo/tune")).path
        '/sweeps/demo/tune'
    """

    path: str
    filesystem: pyarrow.fs.FileSystem | None = None

    @classmethod
    def resolve(cls, uri: str | None, default: Path) -> TrialStorage:
        """``uri`` (a local path or ``s3://BUCKET/PATH``), or the sweep directory's ``default``."""
        if not uri:
            return cls(str(default))
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            return cls(f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/"), _s3_filesystem())
        if parsed.scheme and parsed.scheme != "file":
            raise SweepDirError(f"storage {uri}: only a local path or an s3:// URI is supported")
        return cls(str(Path(parsed.path if parsed.scheme else uri).resolve()))

    @property
    def is_local(self) -> bool:
        return self.filesystem is None

    def joined(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])


def _s3_filesystem() -> pyarrow.fs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    options = {
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    if endpoint:
        parsed = urlparse(endpoint)
        options.update(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https")
    return pyarrow.fs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


def check_shared(storage: TrialStorage) -> None:
    """On a cluster of several nodes, make sure a local storage path is one folder that every node sees."""
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if not storage.is_local or len(nodes) < 2:
        return
    folder = Path(storage.path)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".effsweep-shared-{secrets.token_hex(4)}"
    token = secrets.token_hex(16)
    marker.write_text(token)
    try:
        probes = [
            _sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                str(marker), token
            )
            for node in nodes
        ]
        seen = ray.get(probes, timeout=120)
    finally:
        marker.unlink(missing_ok=True)
    blind = sorted({node["NodeManagerAddress"] for node, ok in zip(nodes, seen, strict=True) if not ok})
    if blind:
        raise SweepDirError(
            f"trial storage {folder} is not the same folder on node(s) {', '.join(blind)}: on several machines, "
            "set storage to an s3:// URI (--storage s3://BUCKET/PATH, with AWS_ENDPOINT_URL for MinIO and the "
            "like) or put the sweep directory on a filesystem every node mounts at the same path"
        )


@ray.remote(num_cpus=0)
def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False
