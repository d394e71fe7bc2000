"""The push process: owns every WebSocket and relays the events workers and the api publish."""
