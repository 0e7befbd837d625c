// Run by tests/integration/test_typescript_producer.py, which prepares the database
// (user, tokenization) and then relays and distributes what this test committed:
// payment A once, payment B never (rolled back), payment C once (five concurrent retries).
import assert from "node:assert/strict";
import { after, test } from "node:test";
import pg from "pg";

import { confirmPayment, enqueuePaymentConfirmed, InvalidPayment, markPaid, type Payment } from "../src/producer.js";

const url = process.env.TOKENDIST_DATABASE_URL;
const fixture = JSON.parse(process.env.TOKENDIST_PRODUCER_FIXTURE ?? "{}") as Record<string, unknown>;
function given(name: string): string {
  const value = fixture[name];
  if (typeof value !== "string") {
    throw new Error(`TOKENDIST_PRODUCER_FIXTURE has no ${name} (see test_typescript_producer.py)`);
  }
  return value;
}
if (!url) throw new Error("set TOKENDIST_DATABASE_URL");
const [userId, walletAddress, tokenizationId, propertyId] = [
  "userId",
  "walletAddress",
  "tokenizationId",
  "propertyId",
].map(given) as [string, string, string, string];
const pool = new pg.Pool({ connectionString: url, max: 10 });
after(() => pool.end());

function payment(name: string, tokens: bigint): Payment {
  return {
    userId: userId,
    investmentId: `inv-ts-${name}`,
    tokenizationId: tokenizationId,
    propertyId: propertyId,
    tokens,
    amountMinor: 50_000,
    currency: "NGN",
    walletAddress: walletAddress,
    provider: "paystack",
    providerReference: `PSK-ts-${name}`,
  };
}

async function confirmations(reference: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    "SELECT count(*) AS n FROM payment_confirmations WHERE provider_reference = $1",
    [reference],
  );
  return Number(rows[0]?.n);
}

test("a committed payment is enqueued once", async () => {
  const a = payment("A", 10n ** 18n + 1n);
  const enqueued = await confirmPayment(pool, a);
  assert.equal(enqueued.created, true);
  assert.equal(await confirmations(a.providerReference), 1);
});

test("a rolled-back payment leaves nothing behind", async () => {
  const b = payment("B", 10n ** 18n + 2n);
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await markPaid(client, b);
    assert.equal((await enqueuePaymentConfirmed(client, b)).created, true);
    await client.query("ROLLBACK"); // the payment service failed after enqueueing
  } finally {
    client.release();
  }
  assert.equal(await confirmations(b.providerReference), 0);
});

test("five concurrent deliveries of one payment enqueue one event", async () => {
  const c = payment("C", 2n ** 70n); // past 2**53: only a string carries it exactly
  const results = await Promise.all(Array.from({ length: 5 }, () => confirmPayment(pool, c)));
  assert.deepEqual(
    results.map((r) => r.created).sort(),
    [false, false, false, false, true],
  );
  assert.equal(new Set(results.map((r) => r.eventId)).size, 1);
  assert.equal(await confirmations(c.providerReference), 1);
});

test("an address without its EIP-55 checksum is refused and nothing is written", async () => {
  const d = { ...payment("D", 1n), walletAddress: walletAddress.toLowerCase() };
  await assert.rejects(confirmPayment(pool, d), (error: unknown) => {
    assert.ok(error instanceof InvalidPayment);
    assert.equal(error.field, "data.wallet_address");
    assert.match(error.message, /^invalid_schema: data\.wallet_address: /);
    return true;
  });
  assert.equal(await confirmations(d.providerReference), 0);
});
