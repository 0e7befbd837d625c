// A payment service written in TypeScript, confirming payments through tokendist's SQL
// producer API (migration 0007). It does what a real one must: mark the payment paid and
// enqueue its event in ONE transaction, so both commit or neither does.
import type { ClientBase, DatabaseError, Pool } from "pg";

export interface Payment {
  userId: string;
  investmentId: string;
  tokenizationId: string;
  propertyId: string;
  tokens: bigint; // base units: beyond 2**53, so a bigint sent as its decimal string
  amountMinor: number;
  currency: string;
  walletAddress: string | null; // EIP-55 checksummed
  provider: string;
  providerReference: string;
}

export interface Enqueued {
  eventId: string;
  created: boolean; // false: this payment was confirmed before; nothing new was written
}

// The function's refusal (SQLSTATE TD001): the input breaks the event schema.
export class InvalidPayment extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

const ENQUEUE = `
SELECT event_id, created FROM enqueue_payment_confirmed(
    p_user_id => $1, p_investment_id => $2, p_tokenization_id => $3, p_property_id => $4,
    p_tokens => $5, p_amount_minor => $6, p_currency => $7, p_wallet_address => $8,
    p_provider => $9, p_provider_reference => $10)`;

// The payment service's own record of the payment (here: tokendist's investments table).
const MARK_PAID = `
INSERT INTO investments (id, user_id, tokenization_id, provider, provider_reference,
                         amount_minor, currency, tokens_requested, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirmed')
ON CONFLICT DO NOTHING`;

function isDatabaseError(error: unknown): error is DatabaseError {
  return error instanceof Error && "code" in error;
}

// Enqueue inside the transaction `client` has open.
export async function enqueuePaymentConfirmed(client: ClientBase, p: Payment): Promise<Enqueued> {
  try {
    const { rows } = await client.query<{ event_id: string; created: boolean }>(ENQUEUE, [
      p.userId,
      p.investmentId,
      p.tokenizationId,
      p.propertyId,
      p.tokens.toString(),
      p.amountMinor,
      p.currency,
      p.walletAddress,
      p.provider,
      p.providerReference,
    ]);
    const [row] = rows;
    if (row === undefined) throw new Error("enqueue_payment_confirmed returned no row");
    return { eventId: row.event_id, created: row.created };
  } catch (error) {
    if (isDatabaseError(error) && error.code === "TD001") {
      throw new InvalidPayment(error.column ?? "", error.message);
    }
    throw error;
  }
}

export async function markPaid(client: ClientBase, p: Payment): Promise<void> {
  await client.query(MARK_PAID, [
    p.investmentId,
    p.userId,
    p.tokenizationId,
    p.provider,
    p.providerReference,
    p.amountMinor,
    p.currency,
    p.tokens.toString(),
  ]);
}

// The webhook handler: payment row and outbox row, atomically. A retry runs it again and
// the function's dedupe makes it a no-op (created = false).
export async function confirmPayment(pool: Pool, p: Payment): Promise<Enqueued> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await markPaid(client, p);
    const enqueued = await enqueuePaymentConfirmed(client, p);
    await client.query("COMMIT");
    return enqueued;
  } catch (error) {
    await client.query("ROLLBACK");
    throw error;
  } finally {
    client.release();
  }
}
