"""The foundation every component stands on: settings, the error tree, the PostgreSQL and
Kafka adapters, retry, signals, logs, metrics, failpoints and the migrations. It imports
no component."""
