"""The synthetic pipeline with the cache and the labels on s3:// (a local S3-compatible server, moto's
ThreadedMotoServer on 127.0.0.1) equals the same run on local disk, array for array."""

from __future__ import annotations

import socket

import pytest
from test_concurrent_writers import (
    FAST,
    assert_consistent_meta,
    assert_same_arrays,
    cli,
    dataset,
    extract_args,
    reference,
    scale_base,  # noqa: F401 - fixture
    voxelize_args,
)

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
pytest.importorskip("s3fs", reason="s3fs is not installed")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("OCCLABEL_STORAGE_OPTIONS", raising=False)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="occ")
    return "s3://occ"


def test_pipeline_on_s3_equals_local(scale_base, bucket):  # noqa: F811
    from occlabel import open_labels
    from occlabel.stages import calibrate_depth
    from occlabel.store.cache import open_cache
    from occlabel.store.common import delete_store, store_bytes, store_exists, store_kind

    ref_cache, ref_labels = reference(scale_base)
    cache, labels = f"{bucket}/run/cache.zarr", f"{bucket}/run/labels.zarr"
    cli(*extract_args(dataset(scale_base), cache))
    out = calibrate_depth.run(cache, device="cpu", progress=False, **FAST)
    assert out == cache
    cli(*voxelize_args(cache, labels))
    assert_same_arrays(cache, ref_cache)
    assert_same_arrays(labels, ref_labels)
    assert_consistent_meta(cache, ref_cache)
    # the readers and helpers take the URL wherever they take a path
    assert store_kind(cache) == "cache" and store_kind(labels) == "labels"
    assert store_bytes(cache) > 0
    assert open_cache(cache).scenes() == open_cache(ref_cache).scenes()
    assert len(open_labels(labels)) == len(open_labels(ref_labels)) > 0
    # the labels record the cache by its URL; --overwrite on a URL deletes the store (delete_store)
    assert open_labels(labels).meta["cache"] == cache
    delete_store(labels)
    assert not store_exists(labels) and store_exists(cache)
