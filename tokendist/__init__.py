"""tokendist: exactly-once distribution of property tokens to investors."""
