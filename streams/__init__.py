"""Wires processors to Kafka topics: the pipeline table, the consumer runtime, codecs, telemetry and the CLI."""
