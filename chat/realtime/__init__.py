"""Realtime: the closed set of events, how they travel through Redis (streams and pub/sub), presence,
and the WebSocket protocol clients speak with the push process."""
