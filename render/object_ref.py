"""One object to render: its uid, where its model file is, and which source listed it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from invs.shards import safe_key


@dataclass(frozen=True)
class ObjectRef:
    """``uri``: a local path, ``s3://...``, ``objaverse:UID``, ``objaverse-xl:UID``, ``samples:NAME`` or
    ``procedural:N``; ``key``: the uid made safe for webdataset keys (``[A-Za-z0-9_-]``); ``source``: the source that
    listed it (``samples``, ``procedural``, ``local``, ``s3``, ``list``, ``objaverse``, or an Objaverse-XL source:
    ``github``, ``thingiverse``, ``smithsonian``, ``sketchfab``).

    ``object_path``: for ``objaverse:`` URIs and XL Sketchfab objects, the object's path in the Objaverse repository
    (``glbs/NNN-NNN/<uid>.glb``) as the driver read it from the index, so that a worker fetches the object without
    the index (None: the index does not list the uid). ``license`` and ``annotations`` (JSON text): what the source
    says of the object, recorded in the manifest (None: the source says nothing). ``file_identifier`` (the object's
    URL at its source), ``sha256`` (of the file as the source annotated it; a fetched file must match) and
    ``file_type`` (extension without the dot): Objaverse's provenance, None where the source has none."""

    uid: str
    uri: str
    source: str
    object_path: str | None = None
    license: str | None = None
    annotations: str | None = None
    file_identifier: str | None = None
    sha256: str | None = None
    file_type: str | None = None

    @property
    def key(self) -> str:
        return safe_key(self.uid)

    @property
    def group(self) -> str | None:
        """Objects that share a download: a GitHub repository at one commit (``ORG/REPO/blob/COMMIT``), fetched
        once by the worker that holds them; None for an object fetched on its own."""
        if self.source != "github" or self.file_identifier is None:
            return None
        parts = self.file_identifier.split("/")
        return "/".join(parts[3:7]) if len(parts) > 7 else None

    @property
    def suffix(self) -> str:
        if self.file_type is not None:
            return f".{self.file_type}"
        if self.uri.startswith(("objaverse:", "samples:", "procedural:")):
            return ".glb"
        return Path(self.uri).suffix.lower()
