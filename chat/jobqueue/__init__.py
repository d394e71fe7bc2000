"""The job queue: arq's key layout, job bodies and Lua, and everything kept beside its keys.

This package and the worker runtime (`workers/runtime/`) are the only code that imports arq or
knows its key layout (`tests/test_fences.py` checks). Its modules:

- `keys`: arq's keys and the wake-up channel; `codec`: job bodies (JSON), the seq splice;
- `scripts`: every Lua script that touches arq's keys (enqueue, claim, requeue, release, count);
- `enqueue`: `QueueWriter` (one round trip per job) and the dead-letter requeue;
- `accept`: the api's send script (membership, rate, seq and enqueue in one call);
- `jobs`: the job contract (function names, payloads, ids); `lanes`: which queue holds a job;
- `state`: what Redis knows of one job; `monitor`: counts, health, the admins' job view;
- `deadletters`, `heartbeats`, `jobstats`: the key families kept beside arq's;
- `outbox`: the commands a job stages for the transaction that finishes it;
- `connection`: the Redis client that is also an arq pool.

arq's public surface is `enqueue_job`, `Job` and a worker that runs `async def f(ctx, ...)`. The
product goes further in three places, each for a measured reason:

1. The api writes jobs with a Lua script: one round trip per send, seq claim included, instead of
   `enqueue_job`'s WATCH/MULTI exchange of four.
2. `ChatWorker` (`workers/runtime/`) claims every due job it has room for, with its body and try
   count, in one round trip, skipping jobs other workers hold; it finishes a batch of jobs
   (results, the events they publish, dead letters) in one MULTI/EXEC, so a job's events and its
   completion are written together or not at all.
3. `ChatWorker` marks the jobs it holds with its id, so a live worker can release a dead one's.

What that relies on, each pinned by `tests/workers/test_arq_seam.py`, which an arq upgrade that
changes any of them fails:

- Keys (`arq.constants`): `arq:job:<id>` holds the job body with an expiry, the queue is a sorted
  set of job ids scored by due time in ms, `arq:in-progress:<id>` exists while a worker runs the
  job (set NX with a PX timeout), `arq:retry:<id>` counts tries (INCR per try, 88400 s life),
  `arq:result:<id>` holds the result for `keep_result`.
- The job body: `serializer({"t": tries or None, "f": function, "a": args, "k": kwargs,
  "et": enqueued ms})`, read by `arq.jobs.deserialize_job_raw`.
- The result body: `{"t", "f", "a", "k", "et", "s", "r", "st", "ft", "q", "id"}`, read by
  `arq.jobs.deserialize_result`, which ignores the extra keys written here (`w` the worker id,
  `tb` a traceback).
- Finishing: a finished job's result is set and its retry, job and in-progress keys deleted and it
  leaves the queue; a retried job goes back in the queue at its new due time and only its
  in-progress key is deleted (`Worker.finish_job`, `Worker.finish_failed_job`).
- `arq.Worker`: its constructor's parameters and these attributes and methods, which ChatWorker
  uses or replaces: `functions` (`Function.coroutine`, `.timeout_s`, `.keep_result_s`,
  `.keep_result_forever`, `.max_tries`), `queue_name`, `max_jobs`, `job_timeout_s`,
  `keep_result_s`, `keep_result_forever`, `poll_delay_s`, `in_progress_timeout_s`, `max_tries`,
  `burst`, `max_burst_jobs`, `ctx`, `on_startup`, `on_shutdown`, `_pool`, `pool`,
  `redis_settings`, `job_serializer`, `job_deserializer`, `expires_extra_ms`, `allow_pick_jobs`,
  `health_check_key`, `jobs_complete`, `jobs_failed`, `jobs_retried`, `main`, `close`,
  `handle_sig`, `record_health`, `_jobs_started`.
- `arq.Retry` (a job asks to run again later) and `arq.worker.func` (a function's own tries and
  timeout), `arq.connections.ArqRedis` (the client that can enqueue).

arq's own worker (`arq workers.main.WorkerSettings`) is not supported: it lacks the heartbeats,
the lanes, the outage rule and most dead letters; `ChatWorker` is the one worker runtime.
"""
