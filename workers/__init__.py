"""arq workers: persist queued message writes to Postgres, then publish their events."""
