"""Durable local state owned by the agent: outbox, minimiser snapshots, catalogue."""
