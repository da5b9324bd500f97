"""One object to render: its uid, where its model file is, and which source listed it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from invs.shards import safe_key


@dataclass(frozen=True)
class ObjectRef:
    """``uri``: a local path, ``s3://...``, ``objaverse:UID`` or ``samples:NAME``; ``key``: the uid made safe for
    webdataset keys (``[A-Za-z0-9_-]``); ``object_path``: for ``objaverse:`` URIs, the object's path in the
    Objaverse repository (``glbs/NNN-NNN/<uid>.glb``) as the driver read it from the index, so that a worker
    fetches the object without the index (None: the index does not list the uid); ``license`` and ``annotations``
    (JSON text): what the source says of the object, recorded in the manifest (None: the source says nothing)."""

    uid: str
    uri: str
    source: str  # "samples" | "local" | "s3" | "objaverse" | "list"
    object_path: str | None = None
    license: str | None = None
    annotations: str | None = None

    @property
    def key(self) -> str:
        return safe_key(self.uid)

    @property
    def suffix(self) -> str:
        if self.uri.startswith(("objaverse:", "samples:")):
            return ".glb"
        return Path(self.uri).suffix.lower()
