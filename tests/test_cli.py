"""The ``dask-faas`` command line."""

from __future__ import annotations

import dask

from dask_faas.backends.storage.local import LocalStorage
from dask_faas.cli import main


def test_config_masks_credentials(capsys):
    with dask.config.set({"faas.s3.secret": "hunter2", "faas.s3.bucket": "data"}):
        assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "***" in out and "bucket: data" in out


def test_clean_lists_then_deletes_leftovers(storage_root, capsys):
    LocalStorage(storage_root).put("dask-faas/deadjob/out/1.0", b"left behind")
    with dask.config.set({"faas.local-storage.root": str(storage_root)}):
        assert main(["check"]) == 0
        assert main(["clean"]) == 0
        assert "dask-faas/deadjob/out/1.0" in capsys.readouterr().out
        assert main(["clean", "--yes"]) == 0
    assert "deleted 1 objects" in capsys.readouterr().out
    assert list(LocalStorage(storage_root).list()) == []


def test_an_unreachable_storage_is_reported(capsys):
    with dask.config.set({"faas.storage": "s3", "faas.s3.bucket": None}):
        assert main(["check"]) == 1
    assert "faas.s3.bucket" in capsys.readouterr().err
