from __future__ import annotations

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
