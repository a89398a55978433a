"""Both object stores honour the same contract, conditional writes included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steps.core.storage import LocalStore, PreconditionFailed, S3Store, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, "prefix", endpoint_url=server)


def test_put_get_list(store):
    assert store.get("a/b.json") is None
    store.put("a/b.json", b"one")
    store.put("a/c/d.bin", b"two")
    assert store.get("a/b.json").data == b"one"
    assert store.list("a/") == ["a/b.json", "a/c/d.bin"]


def test_put_if_absent_refuses_second_writer(store):
    store.put_if_absent("v/1.json", b"first")
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("v/1.json", b"second")
    assert store.get("v/1.json").data == b"first"


def test_put_if_match_is_a_compare_and_swap(store):
    store.put_if_match("alias.json", b"v1", None)
    stale = store.get("alias.json").etag
    store.put_if_match("alias.json", b"v2", stale)
    with pytest.raises(PreconditionFailed):
        store.put_if_match("alias.json", b"v3", stale)
    assert store.get("alias.json").data == b"v2"


def test_directory_round_trip_replaces_stale_files(store, tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "x.txt").write_text("x")
    (source / "sub" / "y.txt").write_text("y")
    store.upload_dir(source, "art")
    (source / "x.txt").unlink()
    store.upload_dir(source, "art")
    out = tmp_path / "out"
    store.download_dir("art", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["sub/y.txt"]


def test_a_listing_fingerprint_changes_with_any_rewrite_and_a_tree_can_be_deleted(store, tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "x.txt").write_text("x")
    (source / "sub" / "y.txt").write_text("y")
    for path in (source / "x.txt", source / "sub" / "y.txt"):
        os.utime(path, (1_700_000_000, 1_700_000_000))  # written long before the rewrite below
    assert store.listing_fingerprint("art") is None
    store.upload_dir(source, "art")
    stored = store.listing_fingerprint("art")
    assert stored is not None and store.listing_fingerprint("art/") == stored
    store.put("artefact/z.txt", b"a neighbour sharing the name's start")
    assert store.listing_fingerprint("art") == stored
    store.put("art/x.txt", b"X")  # the same size, rewritten
    assert store.listing_fingerprint("art") != stored
    store.delete_tree("art")
    assert store.listing_fingerprint("art") is None and store.list("art/") == []
    assert store.get("artefact/z.txt") is not None


def test_sizes_are_listed_under_a_prefix_only_and_one_object_can_be_deleted(store):
    store.put("art/x.txt", b"xx")
    store.put("art/sub/y.txt", b"yyy")
    store.put("artefact/z.txt", b"a neighbour sharing the name's start")
    assert store.sizes("art/") == {"art/sub/y.txt": 3, "art/x.txt": 2}
    assert store.sizes("nothing/") == {}
    store.delete("art/x.txt")
    store.delete("art/x.txt")  # gone already: nothing to do
    assert list(store.sizes("art/")) == ["art/sub/y.txt"]


def test_open_store_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="gs://"):
        open_store("gs://bucket/x")
    with pytest.raises(ValueError, match="needs a bucket"):
        open_store("s3:///nobucket")


def test_local_store_refuses_keys_outside_root(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        LocalStore(tmp_path).put("../outside", b"x")


def test_an_upload_that_runs_out_of_space_leaves_no_part_copy(tmp_path, monkeypatch):
    """Each failed attempt used to leave its hidden staging folder, and the disk stayed full after the run."""
    import errno
    import shutil as real_shutil

    from steps.core import storage

    source = tmp_path / "model"
    source.mkdir()
    (source / "weights.npz").write_bytes(b"x" * 1000)

    def copy_then_fill(src, dst, dirs_exist_ok=False):
        (Path(dst) / "weights.npz").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(dst) / "weights.npz"))

    monkeypatch.setattr(storage.shutil, "copytree", copy_then_fill)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(OSError):
        store.upload_dir(source, "artifacts/k/out")
    monkeypatch.setattr(storage.shutil, "copytree", real_shutil.copytree)
    assert [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".")] == []


def test_a_lock_that_cannot_be_made_in_a_read_only_folder_is_skipped_only_where_asked(tmp_path, monkeypatch):
    """Local copies in a read-only home are read as they are (no process can change them there): the lock that
    guards making them is skipped; anywhere else a lock that cannot be made is an error."""
    import errno

    from steps.core import storage

    def refused(path, mode="r"):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(storage, "open", refused, raising=False)
    with storage.file_lock(tmp_path / ".copies.lock", unless_read_only=True):
        pass
    with pytest.raises(OSError, match="Read-only"):
        with storage.file_lock(tmp_path / ".copies.lock"):
            pass
