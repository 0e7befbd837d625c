-- provider_payments.body and payment_adjustments.body kept the delivered body verbatim,
-- the customer's e-mail, names and card details included. From now on they hold only the
-- fields reconciliation with Paystack needs (webhook/paystack.py KEPT_FIELDS), and
-- provider_payments gets the raw body's SHA-256, as payment_adjustments already has: it
-- identifies the delivery, and anyone holding a copy of the body can check it against
-- the row. Existing rows are reduced the same way here; their hash is computed first,
-- from the verbatim text (UTF-8 decoded from the raw bytes, so re-encoding gives them
-- back exactly).
ALTER TABLE provider_payments ADD COLUMN body_sha256 TEXT
    CHECK (body_sha256 ~ '^[0-9a-f]{64}$');
UPDATE provider_payments SET body_sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex');
ALTER TABLE provider_payments ALTER COLUMN body_sha256 SET NOT NULL;

-- The kept scalar fields of the body's "data" ("a.b": field b of object a) and its event.
-- jsonb refuses \u0000 escapes: a body with one is read without them, and a body that
-- still cannot be read keeps nothing (its columns remain).
CREATE FUNCTION pg_temp.kept_fields(body TEXT, fields TEXT[]) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    doc JSONB;
    kept JSONB := '{}';
    field TEXT;
    path TEXT[];
    value JSONB;
BEGIN
    BEGIN
        doc := replace(body, '\u0000', '')::jsonb;
    EXCEPTION WHEN others THEN
        RETURN '{}';
    END;
    FOREACH field IN ARRAY fields LOOP
        path := string_to_array(field, '.');
        value := doc #> ('{data}' || path);
        IF value IS NOT NULL AND jsonb_typeof(value) NOT IN ('object', 'array') THEN
            IF cardinality(path) = 2 AND kept -> path[1] IS NULL THEN
                kept := jsonb_set(kept, path[1:1], '{}');
            END IF;
            kept := jsonb_set(kept, path, value);
        END IF;
    END LOOP;
    RETURN jsonb_build_object('event', doc -> 'event', 'data', kept)::text;
END $$;

UPDATE provider_payments SET body = pg_temp.kept_fields(body, ARRAY[
    'id', 'domain', 'status', 'reference', 'amount', 'currency', 'paid_at', 'paidAt',
    'channel', 'fees', 'customer.id', 'customer.customer_code']);

UPDATE payment_adjustments SET body = pg_temp.kept_fields(body, ARRAY[
    'id', 'domain', 'status', 'transaction_reference', 'refund_reference', 'amount',
    'currency']) WHERE kind = 'refund';

UPDATE payment_adjustments SET body = pg_temp.kept_fields(body, ARRAY[
    'id', 'domain', 'status', 'resolution', 'category', 'refund_amount', 'currency',
    'due_at', 'resolved_at', 'created_at', 'transaction.id', 'transaction.reference',
    'transaction.amount', 'transaction.currency']) WHERE kind = 'dispute';

DROP FUNCTION pg_temp.kept_fields(TEXT, TEXT[]);

COMMENT ON COLUMN provider_payments.body IS
    'the delivered body reduced to the fields reconciliation needs (no personal data)';
COMMENT ON COLUMN payment_adjustments.body IS
    'the delivered body reduced to the fields reconciliation needs (no personal data)';
