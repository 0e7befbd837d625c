"""The payment provider's webhook receiver (Paystack) and the checkout API that creates
the pending investments it confirms."""

from tokendist.webhook.checkout import PendingInvestment, create_pending_investment
from tokendist.webhook.receiver import FlagReason, Outcome

__all__ = ["FlagReason", "Outcome", "PendingInvestment", "create_pending_investment"]
