"""Adopting tokendist from a running system: ``tokendist legacy audit`` and
``tokendist legacy settle``.

    audit.py     reads the old system (read-only) and the chain, writes the findings
    findings.py  the pure matching and classification rule (no I/O)
    chain.py     Transfer logs out of the old distributor wallets
    report.py    the audit file (JSON and CSV): writing, reading back strictly, rendering
    settle.py    tops up the under-paid through the outbox, adopts holdings by addition
    repository.py + queries.py   every statement, old database and ours
"""
