"""The stateless REST api: validates, reads Postgres, writes small things, enqueues message writes."""
