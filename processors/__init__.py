"""Stage logic as plain async code with injected clients; knows nothing of Kafka (never imports streams)."""
