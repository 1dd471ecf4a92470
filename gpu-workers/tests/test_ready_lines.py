"""The "ready" lines of several worker processes sharing one stdout pipe (the supervisor's children do) must
arrive whole: `atelier edit --gpus 0,1` counts them, and a glued or split line means a worker is never seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

PROCESSES = 4
EVENTS_PER_PROCESS = 150
ROUNDS = 4

_EMIT = """
import sys
from atelier_gpu.worker import emit_event
me = int(sys.argv[1])
for i in range({n}):
    emit_event({{"event": "ready", "task_queue": "gpu-x", "worker": f"host:{{me}}:gpu{{me}}", "seq": i,
                 "pad": "x" * 200}})
"""


def test_ready_lines_of_concurrent_processes_never_interleave():
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")  # as cli/gpuWorker.ts starts the worker
    code = _EMIT.format(n=EVENTS_PER_PROCESS)
    for round_no in range(ROUNDS):
        read_end, write_end = os.pipe()
        procs = [subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=write_end, env=env)
                 for p in range(PROCESSES)]
        os.close(write_end)
        with os.fdopen(read_end, "r", encoding="utf-8") as stream:
            lines = stream.read().splitlines()
        assert [p.wait(60) for p in procs] == [0] * PROCESSES
        bad = []
        seen: dict[str, int] = {}
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                bad.append(line[:120])
                continue
            seen[event["worker"]] = seen.get(event["worker"], 0) + 1
        assert not bad, f"round {round_no}: {len(bad)} lines did not parse, e.g. {bad[:3]}"
        assert sorted(seen.values()) == [EVENTS_PER_PROCESS] * PROCESSES
