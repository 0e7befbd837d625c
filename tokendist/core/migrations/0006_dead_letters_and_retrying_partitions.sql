-- Every Kafka record the consumer parked, once per original position however many times
-- it was parked (a replay or a crash before the offset commit parks it again: the DLQ
-- topic is at-least-once, this table is the distinct count). The record's own bytes are
-- kept here only when its copy could never be written to the DLQ topic (too large for it,
-- or headers a producer cannot send): the DLQ then gets a small record pointing here.
CREATE TABLE dead_letters (
    topic            TEXT NOT NULL,
    kafka_partition  INTEGER NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset     BIGINT NOT NULL CHECK (kafka_offset >= 0),
    reason           TEXT NOT NULL,
    detail           TEXT NOT NULL,
    value_bytes      INTEGER NOT NULL CHECK (value_bytes >= 0),
    times_parked     INTEGER NOT NULL DEFAULT 1 CHECK (times_parked > 0),
    stored           BOOLEAN NOT NULL DEFAULT false,
    stored_key       BYTEA,
    stored_value     BYTEA,
    -- [[name, base64 value or null], ...] in the record's order
    stored_headers   JSONB,
    first_parked_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_parked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset),
    CHECK (stored OR (stored_key IS NULL AND stored_value IS NULL AND stored_headers IS NULL))
);
CREATE INDEX dead_letters_stored ON dead_letters (first_parked_at) WHERE stored;

-- Partitions whose next record is being retried, as their current owner sees them: what
-- `tokendist status` shows as waiting (the broker or database is down, or a record keeps
-- failing until it is parked). The owner removes its row once the record finished.
CREATE TABLE retrying_partitions (
    consumer_group   TEXT NOT NULL,
    topic            TEXT NOT NULL,
    kafka_partition  INTEGER NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset     BIGINT NOT NULL CHECK (kafka_offset >= 0),
    attempts         INTEGER NOT NULL CHECK (attempts > 0),
    error            TEXT NOT NULL,
    since            TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
