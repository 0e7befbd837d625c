"""The hot path: a member of the consumer group and the distribution state machine it
drives (validate, check the payment, claim, sign, broadcast, confirm, credit), with its
chain client, nonce handling, resubmitter and parking of bad records."""
