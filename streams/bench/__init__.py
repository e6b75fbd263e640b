"""What ``chatstream bench`` measures besides latency: CPU per process and the no-Kafka baseline."""
