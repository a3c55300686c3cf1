"""Delivery of system events: message building, claim check, batched sends, records, retries."""
