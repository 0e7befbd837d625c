"""The project's exception tree: every error it raises on purpose is one of these.
Adapters (``tokendist.core.db``, ``tokendist.core.kafka``, ``tokendist.consumer.chain``,
the providers' verify-API clients) translate their library's errors into this tree, once,
inside the adapter.

    TokendistError
    ├── TransientError        retry with capped backoff; nothing moves meanwhile (exit 1)
    │   ├── DatabaseUnavailable   (asyncpg connection / server errors)
    │   ├── BrokerUnavailable     (aiokafka errors)
    │   │   └── BrokerRefused         authentication failed, or this principal's ACLs
    │   │                             do not allow the request (retried: an ACL can be
    │   │                             granted while a service waits)
    │   ├── ChainUnavailable      (RPC connection errors, timeouts)
    │   ├── SignerUnavailable     (the key's custody: KMS unreachable, throttling)
    │   ├── BatchDeferred         a batch goes back to the queue: its key was refused or
    │   │                         drained meanwhile (another key takes it), or fees are
    │   │                         above the cap (it waits for them to fall)
    │   └── ProviderUnavailable   (the payment provider's API: errors, timeouts)
    ├── SettingsError         configuration missing or invalid; names the variable (exit 2)
    ├── InvalidInput          an operator command was asked something it refuses (exit 2)
    │   └── GroupActive           replay refused: the consumer group has live members
    ├── InvalidEvent          the event can never be processed: parked in the DLQ with a reason
    ├── RecordRejected        the broker will never take this record (too large, malformed)
    ├── Unreadable            a body is not one well-defined JSON document (``reason``)
    ├── MalformedPayload      a signed webhook body is not the event it claims (``reason``)
    ├── CheckoutRefused       a pending investment cannot be created as asked (``reason``)
    ├── RequestRefused        an HTTP request answered before it is handled (``status``,
    │                         ``reason``): too large, too slow, unreadable
    ├── StateConflict         a distribution was not in the state expected: another worker
    │                         moved it; reload and decide again
    ├── ChainRejected         the node or contract refused a transaction deterministically
    │   └── KeyRejected           ... because of the signing key (gas money, role, draining,
    │                             its custody refusing it: disabled, access denied):
    │                             another key of the pool may send the same payments
    ├── NotInTransaction      outbox.enqueue called outside the caller's transaction
    ├── MigrationError        a migration file changed after it was applied
    └── StoppedWhileWaiting   stop was requested while a start-up step waited for its
                              dependency: a clean exit, not a failure

``Unreadable`` and ``MalformedPayload`` are also ``ValueError``: they are parse failures.
Outside the tree on purpose: a misuse of an object (a second ``run()``, an illegal state
transition) is a bug and raises ``RuntimeError``/``ValueError``; pydantic validators and
argparse types raise what their library expects.
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


class BrokerRefused(BrokerUnavailable):
    """The broker answered, refusing our credentials or the principal's permissions."""


class ChainUnavailable(TransientError):
    pass


class SignerUnavailable(TransientError):
    """The service that holds a key (AWS KMS) cannot be reached or asks us to slow down."""


class BatchDeferred(TransientError):
    """The batch goes back to the queue: its key was refused or drained meanwhile, or
    fees are above the cap."""


class ProviderUnavailable(TransientError):
    pass


class SettingsError(TokendistError):
    """Configuration is missing or invalid; the message names the variable to set."""


class InvalidInput(TokendistError):
    """An operator command's arguments are refused; nothing was written or sent."""


class GroupActive(InvalidInput):
    """Offsets cannot move under live consumers: they would commit over the move."""


class InvalidEvent(TokendistError):
    """The event cannot be processed as sent; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RecordRejected(TokendistError):
    """Kafka refuses this record itself, not for an outage: sending it again cannot help."""


class Unreadable(TokendistError, ValueError):
    """Not one well-defined JSON document; ``reason`` says why, for the answer and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class MalformedPayload(TokendistError, ValueError):
    """The body is signed but cannot be read as the event it claims to be (answer 400)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class RequestRefused(TokendistError):
    """An HTTP request answered before it is handled: ``status`` with ``{"error": reason}``."""

    def __init__(self, status: int, reason: str, detail: object = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class CheckoutRefused(TokendistError):
    """``reason``: ``unknown_tokenization`` or ``conflict`` (the id or reference is taken)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StateConflict(TokendistError):
    """The row was not in the expected state: another worker moved it; reload."""


class ChainRejected(TokendistError):
    """A call reverts or a transaction was refused for a reason retrying cannot fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyRejected(ChainRejected):
    """Refused because of the signing key itself (no gas money, no operator role): the
    same payments may go through under another key."""


class NotInTransaction(TokendistError):
    pass


class MigrationError(TokendistError):
    pass


class StoppedWhileWaiting(TokendistError):
    """Stop was requested while a start-up step waited for its dependency."""
