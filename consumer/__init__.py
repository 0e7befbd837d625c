"""The Kafka consumer, the distribution state machine, the chain client and the tools
around them (deploy, KYC release, verify)."""
