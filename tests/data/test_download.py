"""The ml-100k fetch path with the network replaced: checked, atomic, and a clear error when it fails."""

from __future__ import annotations

import hashlib
import urllib.error

import pytest

import narm_lightning.data.download as download
from narm_lightning.errors import DataError
from narm_lightning.io import sha256_file

PAYLOAD = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"


@pytest.fixture()
def expect_payload(monkeypatch) -> None:
    """Make the tiny PAYLOAD the "real" ml-100k: its size and SHA-256 become the expected ones."""
    monkeypatch.setattr(download, "ML100K_SIZE", len(PAYLOAD))
    monkeypatch.setattr(download, "ML100K_SHA256", hashlib.sha256(PAYLOAD).hexdigest())


def _source(result):
    def fetch(timeout: float) -> bytes:
        if isinstance(result, Exception):
            raise result
        return result
    return fetch


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_good_payload_lands_in_place(tmp_path, monkeypatch, expect_payload, capsys, caplog) -> None:
    monkeypatch.setattr(download, "_from_grouplens", _source(PAYLOAD))
    monkeypatch.setattr(download, "_from_recbole_wheel", _source(AssertionError("second source not needed")))
    with caplog.at_level("INFO", logger=download.__name__):
        target = download.fetch_ml100k(tmp_path)
    said = capsys.readouterr().out + "".join(f"{r.getMessage()}\n" for r in caplog.records)
    assert said.count("etched ml-100k") == 1 and said.startswith("Fetched ml-100k from GroupLens into "), said
    assert target == tmp_path / "ml-100k" / "ml-100k.inter"
    assert target.read_bytes() == PAYLOAD
    assert _files(tmp_path) == ["ml-100k/ml-100k.inter"], "no temp file left behind"


def test_falls_back_to_the_wheel_when_grouplens_is_unreachable(tmp_path, monkeypatch, expect_payload) -> None:
    monkeypatch.setattr(download, "_from_grouplens", _source(urllib.error.URLError("no route to host")))
    monkeypatch.setattr(download, "_from_recbole_wheel", _source(PAYLOAD))
    assert download.fetch_ml100k(tmp_path).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("grouplens", "wheel", "messages"),
    [
        (PAYLOAD.replace(b"4", b"5"), OSError("pip failed"), ["GroupLens: checksum", "pip failed"]),
        (PAYLOAD + b"x", PAYLOAD[:-3], [f"GroupLens: {len(PAYLOAD) + 1} bytes; expected {len(PAYLOAD)}",
                                        f"{len(PAYLOAD) - 3} bytes"]),
        (urllib.error.URLError("timed out"), TimeoutError("pip download"), ["URLError", "TimeoutError"]),
    ],
)
def test_bad_or_missing_payloads_leave_nothing_and_name_root_and_sources(
    tmp_path, monkeypatch, expect_payload, grouplens, wheel, messages
) -> None:
    monkeypatch.setattr(download, "_from_grouplens", _source(grouplens))
    monkeypatch.setattr(download, "_from_recbole_wheel", _source(wheel))
    with pytest.raises(DataError) as info:
        download.fetch_ml100k(tmp_path / "data")
    text = str(info.value)
    assert f"data.root={tmp_path / 'data'}" in text
    assert "GroupLens" in text and "recbole 1.2.1 wheel" in text
    for message in messages:
        assert message in text
    assert not (tmp_path / "data").exists() or _files(tmp_path / "data") == []


def test_unwritable_root_is_a_data_error(tmp_path, monkeypatch, expect_payload) -> None:
    monkeypatch.setattr(download, "_from_grouplens", _source(PAYLOAD))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="data.root=.*cannot write"):
        download.fetch_ml100k(blocker)


def test_expected_size_and_checksum_are_those_of_the_real_file(shared_data) -> None:
    real = shared_data / "ml-100k" / "ml-100k.inter"
    assert real.stat().st_size == download.ML100K_SIZE
    assert sha256_file(real) == download.ML100K_SHA256
