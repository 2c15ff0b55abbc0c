"""Delivery to storage: the outbox, storage jobs, the storage layout (targets, locations), retention and the scrub."""
