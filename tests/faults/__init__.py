"""Jepsen-style fault runs: the whole pipeline (outbox → relay → Kafka → consumer group →
chain + holdings) under crashes, rebalances, duplicates, replays and service outages,
then checked for lost and doubled distributions.

    python -m tests.faults --seed S --runs N [--brokers 1|3] [--payments P]

Run ``r`` draws everything it does from ``random.Random(S + r)``, so a failing run is
replayed with ``--seed S+r --runs 1``. The fault *plan* (kinds, instants, parameters) is
reproduced exactly; the interleaving with the system under test is not (it never is).

The stack (state directory + ports) comes from the environment printed by
``stack/stack.sh env``, so the same code drives a private stack or CI's standard one.
"""
