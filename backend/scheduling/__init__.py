"""The scheduler's domain (the service is backend/services/scheduler.py):

- calendar: `at = "HH:MM"` / `every = "15m"` schedules, the latest and next occurrence, the
  trading session and its last closed day (pure: no Redis, no asyncio);
- claims: the once-per-slot claim of a run on Redis, taken over from a dead instance once, and
  the finished run's record;
- jobs: the registry from job kind to the coroutine that performs one run, with its params;
- records: what the scheduler publishes, read by others (the CLI), and an operator's request
  for a run.
"""
