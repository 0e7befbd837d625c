"""The upstream API (``enqueue``) and the relay that publishes outbox rows to Kafka."""

from tokendist.outbox.enqueue import EnqueueResult, enqueue

__all__ = ["EnqueueResult", "enqueue"]
