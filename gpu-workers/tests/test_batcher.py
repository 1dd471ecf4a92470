"""The micro-batcher on its own (fake GPU function)."""

from __future__ import annotations

import threading
import time

import pytest

from atelier_gpu.batcher import Job, MicroBatcher, WorkerShuttingDown


class Recorder:
    def __init__(self, delay: float = 0.0):
        self.batches: list[list] = []
        self.delay = delay
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, jobs):
        self.batches.append([j.payload for j in jobs])
        self.started.set()
        self.release.wait(10)
        time.sleep(self.delay)
        for j in jobs:
            j.future.set_result((j.payload, len(jobs)))


def test_groups_compatible_rows_up_to_max_batch():
    rec = Recorder()
    rec.release.clear()
    b = MicroBatcher(rec, max_batch=3, max_wait_s=0.5).start()
    # occupy the GPU thread so the rest queue up
    f0 = b.submit(Job("blocker", "x0"), announced=False)
    assert rec.started.wait(5)
    futs = [b.submit(Job(key, name), announced=False)
            for key, name in [("A", "a1"), ("B", "b1"), ("A", "a2"), ("A", "a3"), ("A", "a4"), (None, "n1")]]
    rec.release.set()
    results = [f.result(5) for f in [f0, *futs]]
    assert rec.batches == [["x0"], ["a1", "a2", "a3"], ["b1"], ["a4"], ["n1"]]
    assert dict(results)["a2"] == 3 and dict(results)["b1"] == 1
    b.shutdown()


def test_waits_for_rows_being_prepared_but_not_forever():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=4, max_wait_s=5.0).start()
    for _ in range(3):
        b.announce()
    b.submit(Job("A", "a1"))
    time.sleep(0.15)
    assert rec.batches == []  # still waiting: a compatible row is being prepared
    b.submit(Job("A", "a2"))
    time.sleep(0.15)
    assert rec.batches == []
    t0 = time.monotonic()
    b.submit(Job("A", "a3"))  # nothing else announced -> runs at once
    assert rec.started.wait(3) and time.monotonic() - t0 < 2.0  # well before the 5 s max wait
    time.sleep(0.05)
    assert rec.batches == [["a1", "a2", "a3"]]
    # a withdrawn announcement does not hold the batch back
    b.announce()
    b.submit(Job("A", "a4"))
    b.withdraw()
    deadline = time.monotonic() + 2
    while len(rec.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.batches[1] == ["a4"]
    b.shutdown()


def test_max_wait_bounds_latency():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=4, max_wait_s=0.2).start()
    b.announce()  # another row "being prepared" that never comes
    b.announce()
    t0 = time.monotonic()
    f = b.submit(Job("A", "a1"))
    f.result(5)
    waited = time.monotonic() - t0
    assert 0.15 <= waited < 1.5
    b.shutdown()


def test_lone_row_starts_immediately():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=8, max_wait_s=10.0).start()
    t0 = time.monotonic()
    b.submit(Job("A", "a1"), announced=False).result(10)
    assert time.monotonic() - t0 < 3.0  # not the 10 s max wait
    b.shutdown()


def test_cancelled_rows_are_skipped():
    from atelier_gpu.errors import RowCancelled

    rec = Recorder()
    rec.release.clear()
    b = MicroBatcher(rec, max_batch=4, max_wait_s=0.0).start()
    b.submit(Job("blocker", "x"), announced=False)
    assert rec.started.wait(5)
    j = Job("A", "a1")
    j.cancelled.set()
    f = b.submit(j, announced=False)
    ok = b.submit(Job("A", "a2"), announced=False)
    rec.release.set()
    with pytest.raises(RowCancelled):
        f.result(5)
    assert ok.result(5) == ("a2", 1)
    b.shutdown()


def test_shutdown_finishes_current_batch_and_rejects_queued():
    rec = Recorder(delay=0.2)
    rec.release.clear()
    b = MicroBatcher(rec, max_batch=2, max_wait_s=0.0).start()
    running = [b.submit(Job("A", f"a{i}"), announced=False) for i in range(2)]
    assert rec.started.wait(5)
    queued = [b.submit(Job("A", f"q{i}"), announced=False) for i in range(3)]
    stopper = threading.Thread(target=b.shutdown, kwargs={"wait": True, "timeout": 10})
    stopper.start()
    time.sleep(0.05)
    rec.release.set()
    stopper.join(10)
    assert [f.result(1)[1] for f in running] == [2, 2]  # the batch in progress finished
    for f in queued:
        with pytest.raises(WorkerShuttingDown):
            f.result(1)
    with pytest.raises(WorkerShuttingDown):
        b.submit(Job("A", "late"), announced=False).result(1)
    assert rec.batches == [["a0", "a1"]]
