"""Pair shards as training data: checked up front, streamed without duplicates, resumable.

**Plan** (:func:`plan_data`, on the driver before any worker starts): read ``DATA/index`` (the preprocess stage's
table), keep the ``train`` rows, check that their shards exist under ``DATA/shards/``, read the first sample to learn
the resolution, and pick the validation pairs (the first ``split == "val"`` keys in sorted order; train pairs when
the index has none, said in ``val_source``). Any problem is one :class:`~invs.errors.InvsError` line.

**Streams.** Every Ray Train worker (rank ``r`` of ``W``) runs ``N = max(loader_workers, 1)`` data-loading
processes; each process reads one *stream* ``s = r * N + j`` of ``S = W * N``. In epoch ``e`` the shard order is a
permutation seeded by ``(seed, e)``: with at least ``S`` shards, stream ``s`` reads shards ``order[s::S]``; with
fewer, every stream reads all shards and keeps the train samples whose position in that order is ``s`` modulo
``S``. Either way each train pair is read by exactly one stream per epoch. Within a stream, a shuffle buffer seeded
by ``(seed, e, s)`` mixes samples. Streams repeat epochs forever; training is counted in steps.

**Position.** Every sample carries ``(stream, epoch, index)`` (its place in the stream's shuffled output) and the
stream's count of skipped samples. :class:`DataPosition` keeps, per stream, the next ``(epoch, index)`` after the
last *consumed* sample (prefetched batches do not count). A resumed stream replays its epoch deterministically and
skips what was consumed without decoding it. ``torch.utils.data.DataLoader`` takes batches from its processes in
turn, starting with process 0; on resume process ``j`` serves stream ``(j + b) % N`` where ``b`` is the number of
batches already consumed, so the interleaving continues exactly.

**Bad samples** (a missing member, an image of the wrong size, a corrupt shard) are skipped with a warning naming
the sample and counted (``skipped`` in the metrics); they never stop training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invs import shards, storage, tables
from invs.errors import InvsError, ShardFormatError
from invs.pair_builder import pair_to_tensors

log = logging.getLogger("invs.train.data")


@dataclass
class DataPlan:
    """What the workers need to stream the training pairs (small: keys, not samples)."""

    data: str
    resolution: int
    train_keys: dict[str, list[str]]  # shard URI -> train keys in it (sorted)
    val_samples: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    val_source: str = "val"
    latents: dict[str, Any] | None = None  # the first train pair's ``meta["latents"]`` (None: no stored latents)
    #: What the first train pair records of how it was built: ``half_angle_deg`` (its mask) and ``depth`` (its
    #: source depth: ``gt`` or the depth model's id); the exported model's spec takes them over the config's.
    pair_geometry: dict[str, Any] = field(default_factory=dict)

    @property
    def shards(self) -> list[str]:
        return sorted(self.train_keys)

    @property
    def num_train(self) -> int:
        return sum(len(v) for v in self.train_keys.values())


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from any reprs (``(seed, "shards", epoch)``, ``(seed, step, micro, rank)``): stable across
    processes and machines, unlike ``hash()``."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def plan_data(data: str, resolution: int | None, val_pairs: int) -> DataPlan:
    """Check the pair shards at ``data`` and plan training on them (see the module docstring)."""
    index_uri = storage.join(data, "index")
    try:
        rows = tables.read_table(index_uri, tables.INDEX_SCHEMA).select(["key", "shard", "split"]).to_pylist()
    except (OSError, ValueError) as exc:
        raise InvsError(f"cannot read the pair index {index_uri}: {exc}") from exc
    if not rows:
        raise InvsError(
            f"no training pairs at {data}: {index_uri} is missing or empty; --data must be the --out of the "
            "preprocess stage (with shards/ and index/)"
        )
    present = set(shards.list_shards(data))
    by_shard: dict[str, list[str]] = {}
    val: list[tuple[str, str]] = []
    for row in rows:
        shard = shards.index_shard(data, row["shard"])
        if shard not in present:
            raise InvsError(f"pair index lists {row['key']} in {shard}, which does not exist; re-run preprocess")
        if row["split"] == "val":
            val.append((row["key"], shard))
        else:
            by_shard.setdefault(shard, []).append(row["key"])
    if not by_shard:
        raise InvsError(f"the pair index at {index_uri} has no train pairs (all {len(rows)} are val)")
    train_keys = {s: sorted(set(k)) for s, k in by_shard.items()}
    val_source = "val"
    chosen = sorted(val)[:val_pairs]
    if not chosen and val_pairs:
        val_source = "train (the index has no val pairs)"
        chosen = sorted((k, s) for s, keys in train_keys.items() for k in keys)[:val_pairs]
    sample = first_readable_sample(train_keys)
    size = sample.target.shape[0]
    if sample.target.shape[:2] != (size, size):
        raise InvsError(f"pairs must be square; {sample.key} is {sample.target.shape[:2]}")
    if resolution is not None and resolution != size:
        raise InvsError(
            f"train.resolution is {resolution} but the pairs at {data} are {size} px; preprocess at {resolution}"
        )
    if size % 8:
        raise InvsError(f"pair size {size} px is not a multiple of 8 (the VAE's downsampling)")
    val_samples: list[tuple[str, dict[str, bytes]]] = []
    for shard in sorted({s for _, s in chosen}):
        for key, members in shards.read_samples(shard, {k for k, s in chosen if s == shard}):
            try:
                pair_to_tensors(shards.decode_pair_sample(key, members, where=shard), size)
            except ShardFormatError as exc:
                log.warning("skipping validation pair %s: %s", key, exc)
                continue
            val_samples.append((key, members))
    val_samples.sort()
    return DataPlan(
        data=data,
        resolution=size,
        train_keys=train_keys,
        val_samples=val_samples,
        val_source=val_source,
        latents=sample.meta.get("latents") if sample.latents is not None else None,
        pair_geometry=recorded_geometry(sample.meta),
    )


def recorded_geometry(meta: dict[str, Any]) -> dict[str, Any]:
    """The mask half-angle and source depth kind a pair's metadata records (keys absent when it does not)."""
    found: dict[str, Any] = {}
    half_angle = (meta.get("mask") or {}).get("half_angle_deg")
    if half_angle is not None:
        found["half_angle_deg"] = float(half_angle)
    if meta.get("depth_source"):
        found["depth"] = "gt" if meta["depth_source"] == "gt" else "zoedepth"
    return found


def first_readable_sample(train_keys: dict[str, list[str]]) -> shards.PairSample:
    """The first train pair that decodes (bad ones are skipped here too), to learn the data's resolution."""
    for shard in sorted(train_keys):
        wanted = set(train_keys[shard])
        try:
            for key, members in shards.iter_tar_samples(shard):
                if key in wanted:
                    try:
                        return shards.decode_pair_sample(key, members, where=shard)
                    except ShardFormatError as exc:
                        log.warning("skipping pair %s: %s", key, exc)
        except ShardFormatError as exc:
            log.warning("%s", exc)
    raise InvsError(f"none of the train pairs listed in the index can be read ({len(train_keys)} shards)")


# ------------------------------------------------------------------------------------------------ streams


@dataclass
class StreamStart:
    """Where a stream starts: first epoch, first index in that epoch, and samples already skipped."""

    epoch: int = 0
    index: int = 0
    skipped: int = 0


def stream_epoch(plan: DataPlan, stream: int, num_streams: int, epoch: int, seed: int) -> Iterator[tuple[str, str]]:
    """``(shard, key)`` of the train samples stream ``stream`` reads in ``epoch``, in file order (before shuffling)."""
    order = plan.shards
    random.Random(derive_seed(seed, "shards", epoch)).shuffle(order)
    if len(order) >= num_streams:
        for shard in order[stream::num_streams]:
            for key in plan.train_keys[shard]:
                yield shard, key
        return
    position = 0
    for shard in order:
        for key in plan.train_keys[shard]:
            if position % num_streams == stream:
                yield shard, key
            position += 1


class PairStream(torch.utils.data.IterableDataset):
    """Infinite stream of training tensors for one Ray Train worker (see the module docstring).

    Each item: ``source``, ``target``, ``partial`` ``(3, R, R)`` in [-1, 1], ``mask`` ``(1, R, R)`` in [0, 1]
    (1 = generate), optionally ``moments`` ``(2, 8, h, w)`` (precomputed VAE posterior of target and partial), and
    the ints ``stream``, ``epoch``, ``index``, ``skipped``.
    """

    def __init__(
        self,
        plan: DataPlan,
        rank: int,
        world_size: int,
        loader_workers: int,
        seed: int,
        shuffle_buffer: int = 64,
        starts: dict[int, StreamStart] | None = None,
        rotation: int = 0,
        latents_vae: str | None = None,
    ) -> None:
        super().__init__()
        self.plan, self.rank, self.world_size = plan, rank, world_size
        self.per_rank = max(loader_workers, 1)
        self.num_streams = world_size * self.per_rank
        if plan.num_train < self.num_streams:
            raise InvsError(
                f"{plan.num_train} train pairs cannot feed {world_size} workers x {self.per_rank} loader processes"
            )
        self.seed, self.shuffle_buffer = seed, max(shuffle_buffer, 1)
        self.starts = starts or {}
        self.rotation = rotation
        self.latents_vae = latents_vae

    def stream_id(self) -> int:
        info = torch.utils.data.get_worker_info()
        j = info.id if info is not None else 0
        return self.rank * self.per_rank + (j + self.rotation) % self.per_rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream = self.stream_id()
        start = self.starts.get(stream, StreamStart())
        skipped = start.skipped
        epoch = start.epoch
        while True:
            produced = 0
            for index, (where, key, members) in enumerate(self._shuffled(stream, epoch)):
                if epoch == start.epoch and index < start.index:
                    continue
                try:
                    item = self._decode(where, key, members)
                except ShardFormatError as exc:
                    skipped += 1
                    log.warning("skipping pair %s (%d skipped so far in stream %d): %s", key, skipped, stream, exc)
                    continue
                produced += 1
                yield item | {"stream": stream, "epoch": epoch, "index": index, "skipped": skipped}
            if produced == 0 and epoch > start.epoch:
                raise InvsError(f"stream {stream} found no usable pair in a whole epoch ({skipped} skipped)")
            epoch += 1

    def _raw(self, stream: int, epoch: int) -> Iterator[tuple[str, str, dict[str, bytes] | None]]:
        wanted: dict[str, list[str]] = {}
        for shard, key in stream_epoch(self.plan, stream, self.num_streams, epoch, self.seed):
            wanted.setdefault(shard, []).append(key)
        for shard, keys in wanted.items():
            remaining = set(keys)
            try:
                for key, members in shards.iter_tar_samples(shard):
                    if key in remaining:
                        remaining.discard(key)
                        yield shard, key, members
            except ShardFormatError as exc:
                log.warning("%s", exc)
            for key in sorted(remaining):  # listed in the index but absent or unreadable: counted as skipped
                yield shard, key, None

    def _shuffled(self, stream: int, epoch: int) -> Iterator[tuple[str, str, dict[str, bytes] | None]]:
        rng = random.Random(derive_seed(self.seed, "buffer", epoch, stream))
        buffer: list[tuple[str, str, dict[str, bytes] | None]] = []
        for item in self._raw(stream, epoch):
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))

    def _decode(self, shard: str, key: str, members: dict[str, bytes] | None) -> dict[str, torch.Tensor]:
        if members is None:
            raise ShardFormatError(f"{shard}:{key}: listed in the index but not readable in the shard")
        sample = shards.decode_pair_sample(key, members, where=shard)
        item = pair_to_tensors(sample, self.plan.resolution)
        moments = usable_moments(sample, self.latents_vae)
        if moments is not None:
            item["moments"] = moments
        return item


def usable_moments(sample: shards.PairSample, vae: str | None) -> torch.Tensor | None:
    """The sample's stored VAE posterior moments ``(2, 8, h, w)`` if they were made by the VAE ``vae``."""
    if vae is None or sample.latents is None:
        return None
    made_by = (sample.meta.get("latents") or {}).get("vae")
    if made_by != vae or sample.latents.ndim != 4 or sample.latents.shape[:2] != (2, 8):
        return None
    return torch.from_numpy(np.asarray(sample.latents, dtype=np.float32))


# ------------------------------------------------------------------------------------------------ position


@dataclass
class DataPosition:
    """Per stream, the next ``(epoch, index)`` after the last consumed sample, and its skipped count."""

    num_streams: int
    batches: int = 0
    streams: dict[int, StreamStart] = field(default_factory=dict)

    def consume(self, batch: dict[str, Any]) -> None:
        self.batches += 1
        for s, e, i, k in zip(*(batch[n].tolist() for n in ("stream", "epoch", "index", "skipped")), strict=True):
            current = self.streams.get(s, StreamStart())
            if (e, i + 1) >= (current.epoch, current.index):
                self.streams[s] = StreamStart(e, i + 1, max(k, current.skipped))

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.streams.values())

    def merge(self, others: list[DataPosition]) -> DataPosition:
        merged = DataPosition(self.num_streams, self.batches, dict(self.streams))
        for other in others:
            merged.streams.update(other.streams)
        return merged

    def to_json(self) -> dict[str, Any]:
        return {
            "num_streams": self.num_streams,
            "batches": self.batches,
            "streams": {str(s): dataclasses.asdict(v) for s, v in sorted(self.streams.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataPosition:
        streams = {int(s): StreamStart(**v) for s, v in data.get("streams", {}).items()}
        return cls(int(data["num_streams"]), int(data.get("batches", 0)), streams)
