-- A parked record's headers are kept as JSON text, not jsonb: jsonb refuses the \u0000
-- escape, and a Kafka header name may hold a NUL (the record-path fuzzer sent one). The
-- text is still JSON: [[name, base64 value or null], ...].
ALTER TABLE dead_letters ALTER COLUMN stored_headers TYPE TEXT USING stored_headers::text;
