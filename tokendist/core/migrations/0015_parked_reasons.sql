-- Why a payment waits before signing (state awaiting_kyc), and what releases it:
--   awaiting_kyc        the investor's KYC: `kyc approve` re-drives the event (ERC-3643:
--                       also the identity's registration, which the re-check sees);
--   token_paused        the ERC-3643 token is paused (the agent unpauses);
--   wallet_frozen       the recipient's wallet or the Distributor is frozen;
--   compliance_refused  a compliance module says no (parked_detail names it).
-- The last three (and an ERC-3643 awaiting_kyc) are asked again by the consumers'
-- periodic re-check, which releases a payment once its condition clears. No nonce is
-- taken and no gas spent for a parked payment: it was asked before it was signed.
ALTER TABLE distributions
    ADD COLUMN parked_reason TEXT CHECK (parked_reason IN
        ('awaiting_kyc', 'token_paused', 'wallet_frozen', 'compliance_refused')),
    ADD COLUMN parked_detail TEXT;

UPDATE distributions SET parked_reason = 'awaiting_kyc' WHERE state = 'awaiting_kyc';

-- Every parked row says why, and no other row claims to be parked.
ALTER TABLE distributions ADD CONSTRAINT distributions_parked_has_reason
    CHECK ((state = 'awaiting_kyc') = (parked_reason IS NOT NULL));
