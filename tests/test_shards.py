"""Render and pair shards: writer/reader symmetry, webdataset compatibility, atomic publishing, loud errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from invs import cameras, shards, storage
from invs.errors import ShardFormatError


def make_render_sample(key: str = "obj_1", views: int = 3, size: int = 16, seed: int = 0) -> shards.RenderSample:
    rng = np.random.default_rng(seed)
    rgba, depth, metas = [], [], []
    K = cameras.intrinsics_from_lens(35, 32, size, size)
    for i in range(views):
        im = rng.integers(0, 256, size=(size, size, 4), dtype=np.uint8)
        im[: size // 2, :, 3] = 0  # transparent top half
        d = rng.uniform(1.5, 3.0, size=(size, size)).astype(np.float16)
        d[im[..., 3] == 0] = 0
        rgba.append(im)
        depth.append(d)
        spec = cameras.CameraSpec(30.0 * i, 10.0, 2.4)
        c2w = spec.c2w()
        metas.append(
            {
                "index": i,
                "K": K,
                "c2w": c2w,
                "blender_matrix_world": cameras.opencv_c2w_to_blender(c2w),
                "azimuth_deg": spec.azimuth_deg,
                "elevation_deg": spec.elevation_deg,
                "radius": spec.radius,
            }
        )
    meta = {
        "uid": key,
        "source": f"/objects/{key}.glb",
        "sha256": "0" * 64,
        "width": size,
        "height": size,
        "normalization": {"scale": 0.5, "offset": [0.0, 0.0, -1.0]},
        "renderer": {"engine": "CYCLES", "samples": 32},
        "views": metas,
    }
    return shards.RenderSample(key=key, meta=meta, rgba=rgba, depth=depth)


def make_pair_sample(key: str = "obj_1_000_001", size: int = 16) -> shards.PairSample:
    rng = np.random.default_rng(1)
    rgb = lambda: rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)  # noqa: E731
    gray = lambda: rng.integers(0, 256, size=(size, size), dtype=np.uint8)  # noqa: E731
    K = cameras.intrinsics_from_lens(35, 32, size, size)
    meta = {
        "uid": "obj_1",
        "src": 0,
        "tgt": 1,
        "K_src": K,
        "c2w_src": np.eye(4),
        "K_tgt": K,
        "c2w_tgt": np.eye(4),
        "depth_source": "gt",
        "depth_alignment": {"scale": 1.0, "shift": 0.0},
        "visible_fraction": 0.4,
    }
    return shards.PairSample(
        key=key,
        source=rgb(),
        target=rgb(),
        partial=rgb(),
        mask=gray(),
        visible=gray(),
        epipolar=gray(),
        depth=rng.uniform(1, 2, (size, size)).astype(np.float32),
        meta=meta,
        latents=rng.normal(size=(8, 2, 2)).astype(np.float16),
    )


def assert_render_equal(a: shards.RenderSample, b: shards.RenderSample) -> None:
    assert a.key == b.key and a.num_views == b.num_views
    for x, y in zip(a.rgba, b.rgba, strict=True):
        assert np.array_equal(x, y)
    for x, y in zip(a.depth, b.depth, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert np.array_equal(b.c2w(1), a.meta["views"][1]["c2w"])  # JSON keeps float64 exactly
    assert np.allclose(b.K(2), a.meta["views"][2]["K"])


# ------------------------------------------------------------------------------------------------ keys


@given(st.text(min_size=1, max_size=200))
def test_safe_keys_are_webdataset_safe(name: str) -> None:
    key = shards.safe_key(name)
    assert shards.KEY_RE.match(key) and "." not in key
    assert len(key) <= 89


def test_safe_keys_keep_distinct_names_distinct() -> None:
    names = ["a.b", "a_b", "a b", "a/b", "a-b", "ä.b", "A.B"]
    keys = [shards.safe_key(n) for n in names]
    assert len(set(keys)) == len(names)
    assert shards.safe_key("8476c4170df24cf5bbe6967222d1a42d") == "8476c4170df24cf5bbe6967222d1a42d"
    with pytest.raises(ShardFormatError):
        shards.check_key("has.dot")


# ------------------------------------------------------------------------------------------------ render shards


def test_render_round_trip_local(tmp_path: Path) -> None:
    published = []
    samples = [make_render_sample(f"obj_{i}", seed=i) for i in range(5)]
    with shards.ShardWriter(str(tmp_path / "shards"), "w0-run1", max_samples=2, on_publish=published.append) as w:
        for s in samples:
            w.write(s.key, shards.encode_render_sample(s))
    assert [len(p.keys) for p in published] == [2, 2, 1]
    assert [storage.basename(p.uri) for p in published] == [f"w0-run1-{i:06d}.tar" for i in range(3)]
    uris = shards.list_shards(str(tmp_path))
    assert uris == [p.uri for p in published]
    read = list(shards.iter_render_samples(uris))
    for a, b in zip(samples, read, strict=True):
        assert_render_equal(a, b)


def test_shards_are_reproducible_bytes(tmp_path: Path) -> None:
    for run in ("a", "b"):
        with shards.ShardWriter(str(tmp_path / run), "w") as w:
            s = make_render_sample()
            w.write(s.key, shards.encode_render_sample(s))
    assert (tmp_path / "a" / "w-000000.tar").read_bytes() == (tmp_path / "b" / "w-000000.tar").read_bytes()


def test_webdataset_reads_our_shards_with_alpha(tmp_path: Path) -> None:
    """Other people's loaders: plain webdataset with pilrgba keeps the alpha channel."""
    s = make_render_sample()
    with shards.ShardWriter(str(tmp_path), "w") as w:
        w.write(s.key, shards.encode_render_sample(s))
    ds = wds.WebDataset(str(tmp_path / "w-000000.tar"), shardshuffle=False).decode("pilrgba")
    (sample,) = list(ds)
    assert sample["__key__"] == s.key
    image = sample["rgba.001.png"]
    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image), s.rgba[1])
    assert np.array_equal(sample["depth.002.npy"], s.depth[2])
    assert sample["meta.json"]["uid"] == s.key


def test_a_failed_writer_publishes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), shards.ShardWriter(str(tmp_path / "shards"), "w") as w:
        s = make_render_sample()
        w.write(s.key, shards.encode_render_sample(s))
        raise RuntimeError("worker died")
    assert shards.list_shards(str(tmp_path)) == []


def test_truncated_shard_is_a_clear_error(tmp_path: Path) -> None:
    with shards.ShardWriter(str(tmp_path), "w") as w:
        for i in range(3):
            s = make_render_sample(f"obj_{i}", views=2, size=32, seed=i)
            w.write(s.key, shards.encode_render_sample(s))
    path = tmp_path / "w-000000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(ShardFormatError, match="truncated"):
        list(shards.iter_render_samples([str(path)]))
    path.write_bytes(os.urandom(2048))
    with pytest.raises(ShardFormatError, match="corrupt"):
        list(shards.iter_render_samples([str(path)]))


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("meta.json", "missing meta.json"),
        ("depth.001.npy", "missing depth.001.npy"),
        ("rgba.000.png", "missing rgba.000.png"),
    ],
)
def test_incomplete_render_samples_are_named(drop: str, message: str) -> None:
    members = shards.encode_render_sample(make_render_sample())
    del members[drop]
    with pytest.raises(ShardFormatError, match=message):
        shards.decode_render_sample("obj_1", members, where="shard.tar")


def test_render_writer_rejects_samples_that_break_the_contract() -> None:
    s = make_render_sample()
    s.depth[0] = s.depth[0].astype(np.float64)
    with pytest.raises(ShardFormatError, match="float16 or float32"):
        shards.encode_render_sample(s)
    s = make_render_sample()
    del s.meta["views"][1]["K"]
    with pytest.raises(ShardFormatError, match="view 1 lacks K"):
        shards.encode_render_sample(s)
    s = make_render_sample()
    s.rgba[2] = s.rgba[2][..., :3].copy()
    with pytest.raises(ShardFormatError):
        shards.encode_render_sample(s)


# ------------------------------------------------------------------------------------------------ pair shards


def test_pair_round_trip(tmp_path: Path) -> None:
    p = make_pair_sample()
    with shards.ShardWriter(str(tmp_path / "shards"), "pairs") as w:
        w.write(p.key, shards.encode_pair_sample(p))
    (q,) = list(shards.iter_pair_samples(shards.list_shards(str(tmp_path))))
    for name in ("source", "target", "partial", "mask", "visible", "epipolar", "depth", "latents"):
        assert np.array_equal(getattr(p, name), getattr(q, name)), name
    assert q.meta["depth_source"] == "gt" and q.meta["visible_fraction"] == 0.4
    assert Image.open(io.BytesIO(shards.encode_pair_sample(p)["mask.png"])).mode == "L"


def test_plain_webdataset_reads_pair_shards_into_the_documented_members(tmp_path: Path) -> None:
    p = make_pair_sample()
    with shards.ShardWriter(str(tmp_path / "shards"), "pairs") as w:
        w.write(p.key, shards.encode_pair_sample(p))
    (sample,) = list(wds.WebDataset(shards.list_shards(str(tmp_path)), shardshuffle=False))
    documented = {"source.png", "target.png", "partial.png", "mask.png", "visible.png", "epipolar.png"}
    documented |= {"depth.npy", "meta.json", "latents.npy"}
    assert sample["__key__"] == p.key and {k for k in sample if not k.startswith("__")} == documented
    assert sample["mask.png"] == shards.encode_pair_sample(p)["mask.png"]


def test_a_member_without_a_field_is_a_clear_error(tmp_path: Path) -> None:
    import tarfile

    path = tmp_path / "odd-000000.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("README")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ShardFormatError, match="odd-000000.tar.*no field extension"):
        list(shards.iter_tar_samples(str(path)))


def test_pair_samples_with_wrong_sizes_or_missing_masks_are_rejected() -> None:
    members = shards.encode_pair_sample(make_pair_sample())
    broken = dict(members)
    del broken["mask.png"]
    with pytest.raises(ShardFormatError, match="missing mask.png"):
        shards.decode_pair_sample("k", broken)
    broken = dict(members)
    broken["partial.png"] = shards.encode_png(np.zeros((8, 8, 3), np.uint8), "RGB")
    with pytest.raises(ShardFormatError, match="partial"):
        shards.decode_pair_sample("k", broken)
    p = make_pair_sample()
    del p.meta["K_src"]
    with pytest.raises(ShardFormatError, match="K_src"):
        shards.encode_pair_sample(p)


# ------------------------------------------------------------------------------------------------ S3


@pytest.mark.s3
def test_render_shards_on_s3_through_our_reader_and_webdataset(s3_bucket: str) -> None:
    out = f"{s3_bucket}/renders"
    samples = [make_render_sample(f"obj_{i}", seed=i) for i in range(3)]
    with shards.ShardWriter(f"{out}/shards", "w0", max_samples=2) as w:
        for s in samples:
            w.write(s.key, shards.encode_render_sample(s))
    uris = shards.list_shards(out)
    assert uris == [f"{out}/shards/w0-000000.tar", f"{out}/shards/w0-000001.tar"]
    for a, b in zip(samples, shards.iter_render_samples(uris), strict=True):
        assert_render_equal(a, b)
    shards.register_webdataset_s3()
    ds = wds.WebDataset(f"{out}/shards/w0-{{000000..000001}}.tar", shardshuffle=False).decode("pilrgba")
    got = list(ds)
    assert [g["__key__"] for g in got] == [s.key for s in samples]
    assert np.array_equal(np.asarray(got[2]["rgba.000.png"]), samples[2].rgba[0])
