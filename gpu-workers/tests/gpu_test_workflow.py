"""A test-only workflow that calls editImageGpu by name on a GPU task queue (as the TS dataset workflow does).
Imports nothing but temporalio so it runs in the workflow sandbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy


@workflow.defn
class CallGpuEdit:
    @workflow.run
    async def run(self, task_queue: str, request: Any, heartbeat_timeout_s: float = 20.0) -> dict:
        return await workflow.execute_activity(
            "editImageGpu",
            request,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout_s),
            retry_policy=RetryPolicy(maximum_attempts=1),
            result_type=dict,
        )
