"""The project's exception tree. Adapters translate library errors into these.

    TokendistError
    ├── TransientError        retry with capped backoff; nothing moves meanwhile
    │   ├── DatabaseUnavailable   (asyncpg connection / server errors)
    │   ├── BrokerUnavailable     (aiokafka errors)
    │   ├── ChainUnavailable      (RPC connection errors, timeouts)
    │   └── ProviderUnavailable   (the payment provider's API: errors, timeouts)
    ├── InvalidEvent          the event can never be processed: parked in the DLQ with a reason
    ├── RecordRejected        the broker will never take this record (too large, malformed)
    ├── InvalidInput          an operator command was asked something it refuses (exit 2)
    ├── NotInTransaction      outbox.enqueue called outside the caller's transaction
    ├── CheckoutRefused       a pending investment cannot be created as asked (``reason``)
    ├── ChainRejected         the node or contract refused a transaction deterministically
    └── MigrationError        a migration file changed after it was applied

``SettingsError`` (configuration) lives beside the settings object.
"""

from __future__ import annotations


class TokendistError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(TokendistError):
    """A dependency is unreachable or overloaded; the same work will succeed later."""


class DatabaseUnavailable(TransientError):
    pass


class BrokerUnavailable(TransientError):
    pass


class ChainUnavailable(TransientError):
    pass


class ProviderUnavailable(TransientError):
    pass


class InvalidEvent(TokendistError):
    """The event cannot be processed as sent; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RecordRejected(TokendistError):
    """Kafka refuses this record itself, not for an outage: sending it again cannot help."""


class InvalidInput(TokendistError):
    """An operator command's arguments are refused; nothing was written or sent."""


class NotInTransaction(TokendistError):
    pass


class CheckoutRefused(TokendistError):
    """``reason``: ``unknown_tokenization`` or ``conflict`` (the id or reference is taken)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ChainRejected(TokendistError):
    """A call reverts or a transaction was refused for a reason retrying cannot fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MigrationError(TokendistError):
    pass
