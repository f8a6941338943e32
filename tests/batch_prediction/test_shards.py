import io

import pytest

from batch_prediction.errors import BatchError
from batch_prediction.shards import Task, byte_range, row_groups, task_from_env


def _lines_of(data: bytes, header: int, count: int) -> list[list[bytes]]:
    fh = io.BytesIO(data)
    shares = []
    for i in range(count):
        start, end = byte_range(fh, header, len(data), Task(i, count))
        shares.append(data[start:end].splitlines())
    return shares


@pytest.mark.parametrize("trailing", [b"\n", b""])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 40])
def test_csv_shares_hold_every_line_once_in_order(count, trailing):
    header = b"a,b\n"
    lines = [f"{i},{'x' * (i % 13)}".encode() for i in range(25)]
    data = header + b"\n".join(lines) + trailing
    shares = _lines_of(data, len(header), count)
    assert [line for share in shares for line in share] == lines
    assert all(share == [] or share[0] in lines for share in shares)


def test_a_share_boundary_on_a_line_start_keeps_that_line_in_the_later_share():
    data = b"h\n" + b"aaaa\n" * 4  # 2 + 20 bytes: the halfway point falls on a line start
    assert _lines_of(data, 2, 2) == [[b"aaaa"] * 2, [b"aaaa"] * 2]


@pytest.mark.parametrize(("groups", "count"), [(10, 4), (3, 4), (1, 1), (0, 2)])
def test_row_groups_are_shared_out_contiguously_and_once(groups, count):
    shares = [row_groups(groups, Task(i, count)) for i in range(count)]
    assert [g for share in shares for g in share] == list(range(groups))


def test_the_task_comes_from_cloud_runs_variables():
    assert task_from_env({}) is None
    assert task_from_env({"CLOUD_RUN_TASK_COUNT": "4", "CLOUD_RUN_TASK_INDEX": "3"}) == Task(3, 4)
    with pytest.raises(BatchError, match="not a task of 4"):
        task_from_env({"CLOUD_RUN_TASK_COUNT": "4", "CLOUD_RUN_TASK_INDEX": "4"})
    with pytest.raises(BatchError, match="must be integers"):
        task_from_env({"CLOUD_RUN_TASK_COUNT": "x"})
