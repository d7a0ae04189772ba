"""The hospital's node: the agent that trains next to the data, its checks, protection, outbox."""
