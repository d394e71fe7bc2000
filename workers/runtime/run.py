"""Running one claimed job (arq's `run_job`): decode it, check its tries, call its function with
its context under its timeout, and turn what happened into an Outcome for finish.py. A failure
that is a dependency being away gives the job its try back (`_wait_out`)."""

from __future__ import annotations

import asyncio
import random

from arq import Retry
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms

from chat.infra import metrics, tracing
from chat.infra.failures import describe, scrubbed_traceback, unavailable
from chat.jobqueue.codec import trace_of
from workers.runtime.base import OUTAGE_FIRST_RETRY_SECONDS, Claimed, Outcome, log
from workers.runtime.finish import Finishing


class Runner(Finishing):
    async def _run(self, job: Claimed) -> None:
        try:
            outcome = await self._execute(job)
        except asyncio.CancelledError:
            outcome = Outcome(job, "release", reason="worker stopping")
        except Exception as exc:  # a bug in this loop, not in the job: release it for another try
            log.error("job %s could not be run\n%s", job.id, scrubbed_traceback(exc))
            outcome = Outcome(job, "release", reason=repr(exc))
        self._finished.append(outcome)
        if self._finisher is None or self._finisher.done():
            self._finisher = asyncio.get_running_loop().create_task(self._finish())

    async def _execute(self, job: Claimed) -> Outcome:
        outcome = Outcome(job, "failed", tries=job.tries, started_ms=timestamp_ms())
        if job.body is None:
            return self._fail(outcome, "expired", "JobExecutionFailed: job expired")
        try:
            function_name, args, kwargs, enqueue_try, enqueued_ms = deserialize_job_raw(
                job.body, deserializer=self.job_deserializer
            )
        except SerializationError as exc:
            return self._fail(outcome, "undecodable", f"SerializationError: {exc}")
        outcome.function, outcome.args, outcome.kwargs = function_name, tuple(args), dict(kwargs)
        outcome.enqueued_ms = enqueued_ms
        outcome.tries = tries = max(job.tries, int(enqueue_try or 0))
        function = self.functions.get(function_name)
        if function is None:
            return self._fail(outcome, "unknown_function", f"function {function_name!r} not found")
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if tries > max_tries:
            # Every earlier try ended without an outcome: its worker died or lost Redis each time.
            return self._fail(outcome, "max_tries", f"max {max_tries} tries exceeded")
        keep_s = self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        forever = (
            self.keep_result_forever if function.keep_result_forever is None else function.keep_result_forever
        )
        outcome.keep_result_ms = None if forever else int(keep_s * 1000)
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        running = self._running[job.id]
        if timeout_s:
            # A timer per job, not a task polling them all: an idle worker wakes for nothing.
            loop = asyncio.get_running_loop()
            running.timer = loop.call_at(loop.time() + timeout_s, running.time_out, job.id)
        metrics.JOB_QUEUED_SECONDS.labels(function_name).observe(
            max(0, outcome.started_ms - job.score) / 1000
        )

        ctx = {
            **self.ctx,
            "job_id": job.id,
            "job_try": tries,
            "enqueue_time": ms_to_datetime(enqueued_ms),
            "score": job.score,
            "outbox": outcome.outbox,
        }
        if tracing.enabled():
            # A child of the span that enqueued the job; ends once finishing has written it.
            outcome.trace = tracing.job(
                trace_of(job.body), function_name, job.id, tries, enqueued_ms, outcome.started_ms
            )
        try:
            call = function.coroutine(ctx, *args, **kwargs)
            outcome.result = await (call if outcome.trace is None else outcome.trace.run(call))
        except Retry as retry:
            outcome.kind = "retry"
            outcome.due_ms = timestamp_ms() + (retry.defer_score or 0)
            outcome.outbox.clear()
            if retry.__cause__ is not None:  # `raise Retry(...) from exc`: what made the job retry
                self._wait_out(outcome, retry.__cause__)
        except asyncio.CancelledError:
            if not running.timed_out:
                raise
            outcome.outbox.clear()
            if tries < max_tries:
                outcome.kind = "retry"
                outcome.due_ms = timestamp_ms() + int(min(2**tries, 60) * 1000)
            else:
                self._fail(outcome, "timeout", f"TimeoutError: the job ran over {timeout_s} s")
        except Exception as exc:
            outcome.outbox.clear()
            # Logged ("failed for good") and shown to admins: no SQL values, bodies or URL secrets.
            self._fail(outcome, "raised", describe(exc), scrubbed_traceback(exc))
            self._wait_out(outcome, exc)
        else:
            outcome.kind = "complete"
        outcome.finished_ms = timestamp_ms()
        return outcome

    def _wait_out(self, outcome: Outcome, exc: BaseException) -> None:
        """A dependency was away (chat.infra.failures.unavailable): not the job's fault, so the try is
        given back and the job waits for it, however many tries it has left, until it is older
        than the outage budget (JOB_OUTAGE_MAX_SECONDS). Its back-off grows with its age, up to
        JOB_OUTAGE_RETRY_MAX_SECONDS: that bounds how soon the backlog drains once it is back."""
        away = unavailable(exc)
        if away is None:
            return
        now = timestamp_ms()
        age_s = max(0, now - (outcome.enqueued_ms or outcome.job.score)) / 1000
        if age_s > self._outage_max_s:
            error = f"{away} was unavailable; the job waited {age_s:.0f} s (JOB_OUTAGE_MAX_SECONDS)"
            self._fail(outcome, "outage", error, outcome.traceback)
            return
        outcome.kind = "retry"
        outcome.gives_back_try = True
        outcome.result = outcome.traceback = None
        outcome.reason = ""
        # Jittered, so that a backlog does not come back all at once.
        delay = min(self._outage_retry_max_s, max(OUTAGE_FIRST_RETRY_SECONDS, age_s))
        outcome.due_ms = now + int(delay * random.uniform(0.5, 1.0) * 1000)

    def _fail(self, outcome: Outcome, reason: str, error: str, tb: str | None = None) -> Outcome:
        outcome.kind = "failed"
        outcome.reason = reason
        outcome.result = error
        outcome.traceback = tb
        outcome.finished_ms = outcome.finished_ms or timestamp_ms()
        return outcome
