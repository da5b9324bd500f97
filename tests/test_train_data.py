"""Training data: planning checks, streams split across workers and loader processes, exact resume, bad samples."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from invs import shards, storage, tables
from invs.errors import InvsError
from invs.pair_builder import collate
from train.data import DataPosition, PairStream, plan_data, stream_epoch

SIZE = 16


def pair_members(key: str, size: int = SIZE, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (size, size), dtype=np.uint8)
    eye = np.eye(4).tolist()
    meta = {
        "uid": key.rsplit("_", 2)[0],
        "src": 0,
        "tgt": 1,
        "K_src": np.eye(3).tolist(),
        "c2w_src": eye,
        "K_tgt": np.eye(3).tolist(),
        "c2w_tgt": eye,
        "depth_source": "gt",
        "depth_alignment": None,
        "visible_fraction": 0.5,
    }
    sample = shards.PairSample(
        key=key,
        source=image,
        target=image,
        partial=image,
        mask=mask,
        visible=mask,
        epipolar=mask,
        depth=np.zeros((size, size), np.float16),
        meta=meta,
    )
    return shards.encode_pair_sample(sample)


def write_pairs(out: str, shard_sizes: list[int], val_every: int = 0, size: int = SIZE) -> list[str]:
    """Pair shards + index like the preprocess stage writes: shard ``i`` holds ``shard_sizes[i]`` pairs."""
    rows, keys, n = [], [], 0
    for i, count in enumerate(shard_sizes):
        with shards.ShardWriter(storage.join(out, "shards"), f"p{i}", max_samples=1 << 20) as writer:
            for _ in range(count):
                key = f"obj{n:03d}_000_001"
                writer.write(key, pair_members(key, size, seed=n))
                split = "val" if val_every and n % val_every == 0 else "train"
                rows.append({"key": key, "uid": key[:6], "shard": "", "split": split, "src": 0, "tgt": 1})
                keys.append(key) if split == "train" else None
                n += 1
        shard = writer.published[0].uri
        for row in rows[-count:]:
            row["shard"] = shard
    tables.append_rows(storage.join(out, "index"), rows, tables.INDEX_SCHEMA)
    return keys


def read_all(dataset: PairStream, count: int, loader_workers: int = 0, batch: int = 1) -> list[dict]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=loader_workers, collate_fn=collate)
    return list(itertools.islice(iter(loader), count))


def test_plan_checks_the_data_and_picks_validation_pairs(tmp_path: Path) -> None:
    train_keys = write_pairs(str(tmp_path), [5, 4], val_every=3)
    plan = plan_data(str(tmp_path), None, val_pairs=2)
    assert plan.resolution == SIZE
    assert plan.num_train == len(train_keys) == 6
    assert [k for k, _ in plan.val_samples] == ["obj000_000_001", "obj003_000_001"]
    assert plan.val_source == "val"
    with pytest.raises(InvsError, match="are 16 px"):
        plan_data(str(tmp_path), 32, val_pairs=0)


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda p: None, id="no-index"),
        pytest.param(lambda p: write_pairs(p, [3], val_every=1), id="only-val"),
    ],
)
def test_plan_fails_fast_on_unusable_data(tmp_path: Path, setup) -> None:
    setup(str(tmp_path))
    with pytest.raises(InvsError):
        plan_data(str(tmp_path), None, val_pairs=1)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    write_pairs(str(tmp_path), [2, 2])
    victim = shards.list_shards(str(tmp_path))[1]
    storage.delete(victim)
    with pytest.raises(InvsError, match="does not exist"):
        plan_data(str(tmp_path), None, val_pairs=0)


@pytest.mark.parametrize("shard_sizes", [[3, 4, 5, 2, 6, 1, 3, 4], [7, 6]], ids=["shard-split", "sample-split"])
def test_every_train_pair_once_per_epoch_across_workers_and_loader_processes(tmp_path: Path, shard_sizes) -> None:
    keys = write_pairs(str(tmp_path), shard_sizes)
    plan = plan_data(str(tmp_path), None, val_pairs=0)
    world, per_rank = 2, 2
    streams = world * per_rank
    for epoch in (0, 1):
        seen = Counter(key for s in range(streams) for _, key in stream_epoch(plan, s, streams, epoch, seed=5))
        assert seen == Counter(keys), "each train pair exactly once per epoch"
    # Through real DataLoader processes: ranks x loader processes read disjoint streams.
    per_stream: dict[int, list[tuple[int, int]]] = {}
    for rank in range(world):
        dataset = PairStream(plan, rank, world, per_rank, seed=5, shuffle_buffer=4)
        for item in read_all(dataset, 12, loader_workers=per_rank):
            per_stream.setdefault(int(item["stream"]), []).append((int(item["epoch"]), int(item["index"])))
    assert sorted(per_stream) == list(range(streams))
    # In-process, stream by stream: epoch 0 of all streams together holds every train pair's image once.
    targets = Counter()
    for s in range(streams):
        rank, j = divmod(s, per_rank)
        n = sum(1 for _ in stream_epoch(plan, s, streams, 0, 5))
        items = read_all(PairStream(plan, rank, world, per_rank, seed=5, shuffle_buffer=4, rotation=j), n)
        assert {int(i["stream"]) for i in items} == {s} and {int(i["epoch"]) for i in items} == {0}
        targets.update(i["target"].numpy().tobytes() for i in items)
    assert len(targets) == len(keys) and set(targets.values()) == {1}


def test_resume_continues_exactly_where_consumption_stopped(tmp_path: Path) -> None:
    """Consume k batches through 2 loader processes, then resume from the recorded position: the next batches
    equal those of an uninterrupted run (including which process serves first)."""
    write_pairs(str(tmp_path), [5, 4, 6])
    plan = plan_data(str(tmp_path), None, val_pairs=0)

    def make(position: DataPosition | None = None) -> PairStream:
        return PairStream(
            plan,
            rank=0,
            world_size=1,
            loader_workers=2,
            seed=3,
            shuffle_buffer=3,
            starts=position.streams if position else None,
            rotation=position.batches % 2 if position else 0,
        )

    full = read_all(make(), 14, loader_workers=2, batch=2)
    for k in (3, 6, 7):  # odd k: the second process serves first after resuming
        position = DataPosition(num_streams=2)
        for batch in full[:k]:
            position.consume(batch)
        position = DataPosition.from_json(position.to_json())
        resumed = read_all(make(position), 14 - k, loader_workers=2, batch=2)
        for a, b in zip(full[k:], resumed, strict=True):
            assert torch.equal(a["target"], b["target"]) and a["index"].tolist() == b["index"].tolist()


def test_bad_samples_are_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = str(tmp_path)
    write_pairs(out, [6])
    shard = shards.list_shards(out)[0]
    samples = list(shards.iter_tar_samples(shard))
    (k1, m1), (k2, m2) = samples[1], samples[4]
    del m1["mask.png"]  # a missing mask
    m2["target.png"] = shards.encode_png(np.zeros((SIZE + 4, SIZE, 3), np.uint8), "RGB")  # a wrong-sized image
    storage.delete(shard)
    with shards.ShardWriter(storage.join(out, "shards"), "p0", max_samples=1 << 20) as writer:
        for key, members in samples:
            writer.write(key, members)
    plan = plan_data(out, None, val_pairs=0)
    with caplog.at_level(logging.WARNING, logger="invs.train.data"):
        items = read_all(PairStream(plan, 0, 1, 0, seed=0, shuffle_buffer=1), 4)
    assert [int(i["index"]) for i in items] == [0, 2, 3, 5]  # file order; 1 and 4 skipped
    assert int(items[-1]["skipped"]) == 2
    text = caplog.text
    assert k1 in text and "missing mask.png" in text
    assert k2 in text and "(20, 16)" in text


def test_collate_keeps_moments_only_when_every_item_has_them() -> None:
    a = {"x": torch.zeros(2), "moments": torch.zeros(2, 8, 1, 1), "stream": 0}
    b = {"x": torch.ones(2), "stream": 1}
    assert set(collate([a, b])) == {"x", "stream"}
    assert collate([a, a])["moments"].shape == (2, 2, 8, 1, 1)
