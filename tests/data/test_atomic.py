from __future__ import annotations

import os

import pytest

from narm_lightning.data.atomic import read_atomic
from narm_lightning.errors import DataError

FIELDS = {"user_id": "token", "item_id": "token", "timestamp": "float"}
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("user_id:token\titem_id:token\n1\t2\n", r"line 1: the header has no field timestamp"),
        ("user_id\titem_id:token\ttimestamp:float\n", r"line 1, column 1: header entry 'user_id'"),
        (HEADER + "1\t2\t3\n1\t2\n", r"line 3: 2 columns; expected 3"),
        (HEADER + "1\t2\t3\n1\t2\tnoon\n", r"line 3: field 'timestamp' is 'noon'; expected a number"),
        (HEADER, "has a header but no rows"),
        ("user_id:float\titem_id:token\ttimestamp:float\n1\t2\t3\n", "field 'user_id' has type 'float'"),
    ],
)
def test_bad_files_give_one_clear_error_naming_file_and_line(tmp_path, content, message) -> None:
    path = tmp_path / "x.inter"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_atomic(path, FIELDS)
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_atomic(tmp_path / "nope.inter", FIELDS)
    with pytest.raises(DataError, match="is a directory"):
        read_atomic(tmp_path, FIELDS)


def test_reads_columns(tmp_path) -> None:
    path = tmp_path / "x.inter"
    path.write_text(HEADER + "7\tabc\t1.5\n8\tdef\t2\n")
    table = read_atomic(path, FIELDS)
    assert table.columns["item_id"].tolist() == ["abc", "def"]
    assert table.columns["timestamp"].tolist() == [1.5, 2.0]
    assert len(table) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HEADER.encode() + b"1\t2\t3\n1\t\xff\t4\n", r"line 3: is not UTF-8 text"),
        (HEADER.encode() + b"1\t2\t3\n1\x00\t2\t4\n", r"line 3: contains a NUL byte"),
        (b"user_id:token\tuser_id:token\ttimestamp:float\n1\t2\t3\n", r"line 1, column 2: field 'user_id' appears"),
        (HEADER.encode() + b"1\t2\t3\n1\t2", r"line 3: 2 columns; expected 3 as in the header \(the file looks trunc"),
        # CRLF, and a form feed (a line break to str.splitlines) inside a token: still line 4
        (HEADER.encode().replace(b"\n", b"\r\n") + b"1\t2\t3\r\n\x0c\t2\t3\r\n1\t2\tx\r\n", r"line 4: field"),
        (HEADER.encode() + "1\t2\t١x\n".encode(), r"line 2: field 'timestamp' is '١x'; expected a number"),
        (HEADER.encode() + b"1\t2\tinf\n", r"line 2: field 'timestamp' is not a finite number"),
        (HEADER.encode() + b"1\t\t3\n", r"line 2: field 'item_id' is empty; expected a token"),
    ],
)
def test_damaged_bytes_name_the_line(tmp_path, content, message) -> None:
    path = tmp_path / "x.inter"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_atomic(path, FIELDS)
    assert str(path) in str(info.value)


def test_bom_crlf_and_duplicate_rows_are_read_as_recbole_would(tmp_path) -> None:
    path = tmp_path / "x.inter"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.encode().replace(b"\n", b"\r\n") + b"7\ta\t1\r\n7\ta\t1\r\n")
    table = read_atomic(path, FIELDS)
    assert table.columns["user_id"].tolist() == ["7", "7"]  # duplicates kept, like RecBole's rm_dup_inter: None
    assert table.columns["timestamp"].tolist() == [1.0, 1.0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path) -> None:
    path = tmp_path / "x.inter"
    path.write_text(HEADER + "1\t2\t3\n")
    path.chmod(0)
    with pytest.raises(DataError, match="cannot be read"):
        read_atomic(path, FIELDS)


def test_unreadable_file_message_via_a_failing_read(tmp_path, monkeypatch) -> None:
    path = tmp_path / "x.inter"
    path.write_text(HEADER + "1\t2\t3\n")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "read_bytes", denied)
    with pytest.raises(DataError, match=r"x.inter: cannot be read \(Permission denied\)"):
        read_atomic(path, FIELDS)
