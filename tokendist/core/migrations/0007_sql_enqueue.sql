-- The producer API in SQL, for payment services not written in Python (node on Supabase,
-- anything with a PostgreSQL driver, PostgREST `rpc`): enqueue_payment_confirmed does what
-- outbox.enqueue does, with the same validation as the PaymentConfirmed v1 schema, so an
-- event it accepts is one the consumer accepts. Objects live in public, not in a schema of
-- their own: the service's role is named tokendist, and a schema named tokendist would
-- come first in the default search_path ("$user", public) and capture every table created
-- unqualified after it.

-- Keccak-256 (the Ethereum variant: padding 0x01, not SHA-3's 0x06), needed for the
-- EIP-55 address checksum; pgcrypto has no Keccak. The 25 lanes are bigints; shifts on
-- bigint never raise, so the rotations are exact on the two's complement bits.
CREATE FUNCTION tokendist_keccak256(message BYTEA) RETURNS BYTEA
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    round_constants CONSTANT BIGINT[] := ARRAY[
        x'0000000000000001'::BIGINT, x'0000000000008082'::BIGINT, x'800000000000808A'::BIGINT,
        x'8000000080008000'::BIGINT, x'000000000000808B'::BIGINT, x'0000000080000001'::BIGINT,
        x'8000000080008081'::BIGINT, x'8000000000008009'::BIGINT, x'000000000000008A'::BIGINT,
        x'0000000000000088'::BIGINT, x'0000000080008009'::BIGINT, x'000000008000000A'::BIGINT,
        x'000000008000808B'::BIGINT, x'800000000000008B'::BIGINT, x'8000000000008089'::BIGINT,
        x'8000000000008003'::BIGINT, x'8000000000008002'::BIGINT, x'8000000000000080'::BIGINT,
        x'000000000000800A'::BIGINT, x'800000008000000A'::BIGINT, x'8000000080008081'::BIGINT,
        x'8000000000008080'::BIGINT, x'0000000080000001'::BIGINT, x'8000000080008008'::BIGINT];
    -- rotation of lane x + 5y (rho), in lane order
    rotations CONSTANT INT[] := ARRAY[
        0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8,
        18, 2, 61, 56, 14];
    rate CONSTANT INT := 136;
    state BIGINT[] := array_fill(0::BIGINT, ARRAY[25]);
    moved BIGINT[] := array_fill(0::BIGINT, ARRAY[25]);
    parity BIGINT[] := array_fill(0::BIGINT, ARRAY[5]);
    padded BYTEA;
    lane BIGINT;
    n INT;
    digest BYTEA := '';
BEGIN
    n := rate - length(message) % rate;
    IF n = 1 THEN
        padded := message || '\x81'::BYTEA;
    ELSE
        padded := message || '\x01'::BYTEA || decode(repeat('00', n - 2), 'hex') || '\x80'::BYTEA;
    END IF;
    FOR block IN 0 .. length(padded) / rate - 1 LOOP
        FOR i IN 0 .. rate / 8 - 1 LOOP
            lane := 0;
            FOR j IN 0 .. 7 LOOP
                lane := lane | (get_byte(padded, block * rate + i * 8 + j)::BIGINT << (8 * j));
            END LOOP;
            state[i + 1] := state[i + 1] # lane;
        END LOOP;
        FOR r IN 1 .. 24 LOOP
            FOR x IN 0 .. 4 LOOP  -- theta
                parity[x + 1] := state[x + 1] # state[x + 6] # state[x + 11] # state[x + 16]
                    # state[x + 21];
            END LOOP;
            FOR x IN 0 .. 4 LOOP
                lane := parity[(x + 4) % 5 + 1]
                    # ((parity[(x + 1) % 5 + 1] << 1) | ((parity[(x + 1) % 5 + 1] >> 63) & 1));
                FOR y IN 0 .. 4 LOOP
                    state[x + 5 * y + 1] := state[x + 5 * y + 1] # lane;
                END LOOP;
            END LOOP;
            FOR x IN 0 .. 4 LOOP  -- rho and pi: lane (x, y) moves to (y, 2x + 3y)
                FOR y IN 0 .. 4 LOOP
                    n := rotations[x + 5 * y + 1];
                    lane := state[x + 5 * y + 1];
                    IF n > 0 THEN
                        lane := (lane << n) | ((lane >> (64 - n)) & ~(-1::BIGINT << n));
                    END IF;
                    moved[y + 5 * ((2 * x + 3 * y) % 5) + 1] := lane;
                END LOOP;
            END LOOP;
            FOR y IN 0 .. 4 LOOP  -- chi
                FOR x IN 0 .. 4 LOOP
                    state[x + 5 * y + 1] := moved[x + 5 * y + 1]
                        # (~moved[(x + 1) % 5 + 5 * y + 1] & moved[(x + 2) % 5 + 5 * y + 1]);
                END LOOP;
            END LOOP;
            state[1] := state[1] # round_constants[r];  -- iota
        END LOOP;
    END LOOP;
    FOR i IN 1 .. 4 LOOP
        FOR j IN 0 .. 7 LOOP
            digest := digest || set_byte('\x00'::BYTEA, 0, ((state[i] >> (8 * j)) & 255)::INT);
        END LOOP;
    END LOOP;
    RETURN digest;
END $$;

-- The EIP-55 form of a 0x address: each hex letter upper case where the Keccak-256 of the
-- lower-case hex has a nibble of 8 or more at its position.
CREATE FUNCTION tokendist_checksum_address(address TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT '0x' || string_agg(
        CASE WHEN (get_byte(h.digest, (i - 1) / 2) >> (4 * (i % 2))) & 15 >= 8
             THEN upper(substr(h.hex, i, 1)) ELSE substr(h.hex, i, 1) END, '' ORDER BY i)
    FROM (SELECT lower(substr(address, 3)) AS hex) AS a,
         LATERAL (SELECT a.hex, tokendist_keccak256(convert_to(a.hex, 'UTF8')) AS digest) AS h,
         generate_series(1, length(a.hex)) AS i
$$;

-- A refusal of the producer's input: SQLSTATE TD001 with parse_event's reason code
-- (invalid_schema) and the field's path, as the pydantic schema names it, in the message
-- and in the error's column field.
CREATE FUNCTION tokendist_refuse(field TEXT, reason TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'TD001', COLUMN = field,
        MESSAGE = format('invalid_schema: %s: %s', field, reason);
END $$;

CREATE FUNCTION tokendist_check_identifier(field TEXT, value TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF value IS NULL OR NOT value ~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        PERFORM tokendist_refuse(field, 'must be 1 to 64 of A-Z a-z 0-9 _ . : -');
    END IF;
END $$;

-- Every check of PaymentConfirmedV1 (tokendist/schemas/events.py), in its field order.
CREATE FUNCTION tokendist_check_payment_confirmed(
    p_user_id TEXT, p_investment_id TEXT, p_tokenization_id TEXT, p_property_id TEXT,
    p_tokens TEXT, p_amount_minor BIGINT, p_currency TEXT, p_wallet_address TEXT,
    p_provider TEXT, p_provider_reference TEXT, p_occurred_at TIMESTAMPTZ, p_event_id UUID
) RETURNS VOID LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_event_id IS NULL THEN
        PERFORM tokendist_refuse('event_id', 'required');
    END IF;
    -- What a Python datetime can hold: the consumer must be able to read it back.
    IF p_occurred_at IS NULL OR NOT isfinite(p_occurred_at)
       OR p_occurred_at < '0001-01-01 00:00:00+00' OR p_occurred_at >= '10000-01-01 00:00:00+00'
    THEN
        PERFORM tokendist_refuse('occurred_at', 'must be a finite time in years 1 to 9999 UTC');
    END IF;
    PERFORM tokendist_check_identifier('data.user_id', p_user_id);
    PERFORM tokendist_check_identifier('data.investment_id', p_investment_id);
    PERFORM tokendist_check_identifier('data.tokenization_id', p_tokenization_id);
    PERFORM tokendist_check_identifier('data.property_id', p_property_id);
    IF p_tokens IS NULL OR NOT p_tokens ~ '^(0|[1-9][0-9]*)$' THEN
        PERFORM tokendist_refuse('data.tokens',
            'must be a string of decimal digits without sign or leading zeros');
    ELSIF p_tokens = '0' THEN
        PERFORM tokendist_refuse('data.tokens', 'must be positive');
    ELSIF length(p_tokens) > 78 OR p_tokens::NUMERIC > 2::NUMERIC ^ 256 - 1 THEN
        PERFORM tokendist_refuse('data.tokens', 'exceeds uint256');
    END IF;
    -- 2**53 - 1: what every JSON producer can represent exactly.
    IF p_amount_minor IS NULL OR p_amount_minor <= 0 OR p_amount_minor > 9007199254740991 THEN
        PERFORM tokendist_refuse('data.amount_minor', 'must be an integer from 1 to 2**53 - 1');
    END IF;
    IF p_currency IS NULL OR NOT p_currency ~ '^[A-Z]{3}$' THEN
        PERFORM tokendist_refuse('data.currency', 'must be three upper-case letters');
    END IF;
    IF p_wallet_address IS NOT NULL AND NOT (
        p_wallet_address ~ '^0x[0-9a-fA-F]{40}$'
        AND p_wallet_address = tokendist_checksum_address(p_wallet_address)
    ) THEN
        PERFORM tokendist_refuse('data.wallet_address',
            'must be an EIP-55 checksummed 0x address');
    END IF;
    IF p_provider IS NULL OR NOT p_provider ~ '^[a-z][a-z0-9_]{1,31}$' THEN
        PERFORM tokendist_refuse('data.provider', 'must match ^[a-z][a-z0-9_]{1,31}$');
    END IF;
    IF p_provider_reference IS NULL OR NOT p_provider_reference ~ '^[!-~]{1,128}$' THEN
        PERFORM tokendist_refuse('data.provider_reference',
            'must be 1 to 128 printable ASCII characters without spaces');
    END IF;
END $$;

-- outbox.enqueue for any language. Runs in the caller's transaction, as every function
-- does: the caller marks the payment paid in that same transaction (BEGIN ... COMMIT, or
-- one statement). Returns the event id and whether anything was written: the same
-- (provider, reference) again, or the same investment under another reference, returns
-- the first event's id with created = false and writes nothing.
CREATE FUNCTION enqueue_payment_confirmed(
    p_user_id TEXT,
    p_investment_id TEXT,
    p_tokenization_id TEXT,
    p_property_id TEXT,
    p_tokens TEXT,
    p_amount_minor BIGINT,
    p_currency TEXT,
    p_wallet_address TEXT,
    p_provider TEXT,
    p_provider_reference TEXT,
    p_occurred_at TIMESTAMPTZ DEFAULT now(),
    p_event_id UUID DEFAULT gen_random_uuid()
) RETURNS TABLE (event_id UUID, created BOOLEAN)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    utc TIMESTAMP := p_occurred_at AT TIME ZONE 'UTC';
    payload JSONB;
    inserted UUID;
    existing UUID;
BEGIN
    PERFORM tokendist_check_payment_confirmed(
        p_user_id, p_investment_id, p_tokenization_id, p_property_id, p_tokens,
        p_amount_minor, p_currency, p_wallet_address, p_provider, p_provider_reference,
        p_occurred_at, p_event_id);
    -- The event exactly as PaymentConfirmedV1.model_dump_json() writes it (times in UTC).
    payload := jsonb_build_object(
        'event_id', p_event_id::TEXT,
        'event_type', 'PaymentConfirmed',
        'schema_version', 1,
        'occurred_at', to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS')
            || CASE WHEN date_trunc('second', utc) = utc THEN '' ELSE to_char(utc, '.US') END
            || 'Z',
        'data', jsonb_build_object(
            'user_id', p_user_id,
            'investment_id', p_investment_id,
            'tokenization_id', p_tokenization_id,
            'property_id', p_property_id,
            'tokens', p_tokens,
            'amount_minor', p_amount_minor,
            'currency', p_currency,
            'wallet_address', p_wallet_address,
            'provider', p_provider,
            'provider_reference', p_provider_reference));
    INSERT INTO payment_confirmations AS pc
        (event_id, provider, provider_reference, investment_id, user_id, tokenization_id,
         tokens, payload)
    VALUES (p_event_id, p_provider, p_provider_reference, p_investment_id, p_user_id,
            p_tokenization_id, p_tokens::NUMERIC, payload)
    ON CONFLICT DO NOTHING
    RETURNING pc.event_id INTO inserted;
    IF inserted IS NULL THEN
        -- READ COMMITTED: this statement's snapshot sees the row whose conflict stopped ours.
        SELECT pc.event_id INTO existing FROM payment_confirmations AS pc
        WHERE (pc.provider = p_provider AND pc.provider_reference = p_provider_reference)
           OR pc.investment_id = p_investment_id
        LIMIT 1;
        IF existing IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'TD002', COLUMN = 'event_id',
                MESSAGE = format('event_id_taken: event_id %s belongs to another payment',
                                 p_event_id);
        END IF;
        RETURN QUERY SELECT existing, false;
        RETURN;
    END IF;
    INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, headers)
    VALUES (gen_random_uuid(), 'user', p_user_id, 'PaymentConfirmed', payload,
            jsonb_build_object('event_id', p_event_id::TEXT, 'event_type', 'PaymentConfirmed',
                               'schema_version', '1'));
    RETURN QUERY SELECT p_event_id, true;
END $$;

-- Only the payment service may confirm payments: no one else gets EXECUTE by default
-- (on Supabase, not anon or authenticated either, whom its default privileges include).
REVOKE EXECUTE ON FUNCTION enqueue_payment_confirmed FROM PUBLIC;
DO $$
DECLARE
    role TEXT;
BEGIN
    FOR role IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION enqueue_payment_confirmed FROM %I', role);
    END LOOP;
END $$;
