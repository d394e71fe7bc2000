"""Infrastructure every process builds on: the database and Redis clients, attachment storage,
the uvicorn server, logging, outages and failures, metrics and probes."""
