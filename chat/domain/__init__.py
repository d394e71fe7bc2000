"""The product's rules that the api, the workers and the use cases share: attachments, blocks,
cursors, membership, mentions, reactions, reading, search, seq numbers, webhooks, quotas and rate
limits."""
