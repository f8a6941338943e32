import io

from batch_prediction.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_elsewhere_than_a_terminal_a_line_every_interval():
    out, clock = io.StringIO(), Clock()
    show = Progress(1000, "task 1/2", stream=out, tty=False, every=10, clock=clock)
    for step in range(1, 10):
        clock.now = step * 4.0
        show.update(rows=step * 100, done=step * 100)
    show.finish(1000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "task 1/2: 300 rows · 25 rows/s · 30% · ETA 28 s"  # at 12 s
    assert len(lines) == 1 + 3  # at 12, 24 and 36 s, then the last line
    assert lines[-1] == "task 1/2: 1,000 rows in 36 s · 28 rows/s"


def test_on_a_terminal_one_line_redrawn():
    out, clock = io.StringIO(), Clock()
    show = Progress(10_000, stream=out, tty=True, clock=clock)
    clock.now = 1.0
    show.update(rows=2_000, done=2_000)
    clock.now = 100.0
    show.update(rows=3_000, done=3_000)
    show.finish(3_000)
    text = out.getvalue()
    assert "\n" not in text.rstrip("\n")
    assert text.endswith("\n")
    assert text.count("\r") == 3
    assert "2,000 rows/s · 20% · ETA 4 s" in text
    assert "ETA 3 min 53 s" in text
