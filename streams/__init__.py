"""Wires processors to Kafka topics: Faust app, topics, codecs, telemetry and the CLI."""
