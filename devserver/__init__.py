"""The embedded dev mode: api, worker and push in one process, no Postgres or Redis needed."""
