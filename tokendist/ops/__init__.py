"""Operator tools: deploy, KYC approval, re-drive, verify, reconcile, replay, status and
the dead-letter tools. Each is a one-shot command over the same database, broker and
chain as the consumer; none runs in the hot path."""
