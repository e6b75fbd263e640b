"""Stage logic as plain async code with injected clients; knows nothing of Faust or Kafka."""
