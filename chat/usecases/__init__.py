"""Use cases: what the api, the CLI and the server API do, as plain async functions taking their
collaborators; no Falcon."""
