"""The payment providers' webhook receiver (Paystack today; each provider a plug-in in
``webhook/providers``) and the checkout API that creates the pending investments it
confirms."""

from tokendist.webhook.checkout import PendingInvestment, create_pending_investment
from tokendist.webhook.receiver import FlagReason, Outcome

__all__ = ["FlagReason", "Outcome", "PendingInvestment", "create_pending_investment"]
