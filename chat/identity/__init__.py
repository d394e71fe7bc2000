"""Who is calling: passwords, access tokens, and the one authentication step the api and the push
handshake share."""
