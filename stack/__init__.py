"""Local services (Kafka, Redis, Weaviate, Jaeger) for development and tests: `chatstream stack up|down|status|logs`.

One module per service says how it is built, configured, started and probed; service.py holds the
shared rules (pid files, detached start, readiness, stop by pid) and manager.py the order.
"""
