"""Batches: many payments in one ``distributeBatch`` transaction.

``gatherer`` collects the payments ready to sign from every partition a process owns and
signs them as one batch (a key from ``consumer.keypool``, a contiguous range of indices);
``settler`` takes a stored batch to its end (broadcast, receipt, per-payment outcome,
one credit for the whole batch); ``indices`` keeps the index floor above every index the
chain has seen used. A distribution stays one row per payment; the batch row is what is
signed, stored before broadcast, re-broadcast and fee-bumped.
"""
