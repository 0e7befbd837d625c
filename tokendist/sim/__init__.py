"""The demo kit: the stand-in payment service, the payment provider's sending side, the
traffic simulator and ``tokendist demo``. Used by the demo, the benchmark and the tests;
nothing in production imports it."""
