-- What each component's role may do, derived from its queries (tokendist/<package>/queries.py
-- and the SQL enqueue function of 0007). `tokendist db migrate` runs this file after every
-- migration, in one transaction: everything is revoked and granted again, so the grants
-- always equal this file (a privilege removed here is removed from the database too), and
-- no session ever sees a role half-granted. The owner role (the one that migrates) owns every
-- object and needs no grant. Roles: 0016_component_roles.sql.
--
-- A new table is granted here, or only its owner and the operator's reads reach it.

REVOKE ALL ON ALL TABLES IN SCHEMA public
    FROM tokendist_webhook, tokendist_relay, tokendist_consumer, tokendist_operator;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public
    FROM tokendist_webhook, tokendist_relay, tokendist_consumer, tokendist_operator;
REVOKE ALL ON FUNCTION enqueue_payment_confirmed
    FROM tokendist_webhook, tokendist_relay, tokendist_consumer, tokendist_operator;
GRANT USAGE ON SCHEMA public
    TO tokendist_webhook, tokendist_relay, tokendist_consumer, tokendist_operator;

-- The webhook receiver and the checkout API (webhook/queries.py, outbox/queries.py): record
-- pending investments and the provider's payments, confirm an investment and enqueue its
-- event. It never touches distributions, holdings or the ledger. UPDATE on investments is
-- also what its SELECT ... FOR UPDATE needs.
GRANT SELECT, INSERT ON users, investments, provider_payments, payment_adjustments,
    payment_confirmations TO tokendist_webhook;
GRANT UPDATE (status, updated_at) ON investments TO tokendist_webhook;
GRANT SELECT ON tokenizations TO tokendist_webhook;
GRANT INSERT ON outbox TO tokendist_webhook;
GRANT USAGE ON SEQUENCE provider_payments_id_seq, payment_adjustments_id_seq, outbox_seq_seq
    TO tokendist_webhook;
-- A payment service in another language enqueues through SQL (0007), as this role.
GRANT EXECUTE ON FUNCTION enqueue_payment_confirmed TO tokendist_webhook;

-- The relay and `tokendist cdc-sweep` (outbox/queries.py): read the outbox, mark rows
-- published, prune published ones. Nothing else.
GRANT SELECT, DELETE ON outbox TO tokendist_relay;
GRANT UPDATE (published_at) ON outbox TO tokendist_relay;

-- The consumer (consumer/queries.py): the distribution state machine, nonces, batches and
-- their transactions, the credit (holdings, ledger, the investment's final status). It reads
-- the confirmed payment an event claims to be and may change neither payments nor the
-- outbox. UPDATE (updated_at) on operator_keys is only what its SELECT ... FOR SHARE needs.
GRANT SELECT, INSERT, UPDATE ON distributions, sender_nonces, chain_transactions, batches,
    distributor_indices, token_holdings, dead_letters TO tokendist_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON retrying_partitions TO tokendist_consumer;
GRANT SELECT, INSERT ON ledger_entries, onchain_payments, operator_keys TO tokendist_consumer;
GRANT UPDATE (updated_at) ON operator_keys TO tokendist_consumer;
GRANT SELECT ON tokenizations, erc3643_suites, users, payment_confirmations
    TO tokendist_consumer;
GRANT SELECT (id, status), UPDATE (status, updated_at) ON investments TO tokendist_consumer;
GRANT USAGE ON SEQUENCE batches_id_seq, ledger_entries_id_seq TO tokendist_consumer;

-- The operator tools (ops/queries.py, ops/legacy/queries.py): `status`, `verify` and the
-- audits read everything; `reconcile` and `redrive` run the consumer's repository;
-- `deploy`/`trex` record tokenizations and suites, `kyc` users and identities, `keys` the
-- key pool, `legacy settle` adoptions and their top-up events. Payments, adjustments and
-- published outbox rows are only read; nothing is deleted.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO tokendist_operator;
GRANT INSERT, UPDATE ON distributions, sender_nonces, chain_transactions, batches,
    distributor_indices, token_holdings, dead_letters, users, onchain_identities,
    operator_keys TO tokendist_operator;
GRANT INSERT ON ledger_entries, onchain_payments, tokenizations, erc3643_suites,
    legacy_adoptions, legacy_ledger_entries, payment_confirmations, outbox
    TO tokendist_operator;
GRANT UPDATE (status, updated_at) ON investments TO tokendist_operator;
-- `chain-check` keeps its checkpoint and the credited payouts it did not find on the chain
-- (removed again once they are back).
GRANT INSERT, UPDATE ON chain_checks TO tokendist_operator;
GRANT INSERT, UPDATE, DELETE ON credited_not_on_chain TO tokendist_operator;
GRANT USAGE ON SEQUENCE batches_id_seq, ledger_entries_id_seq, legacy_ledger_entries_id_seq,
    outbox_seq_seq TO tokendist_operator;
