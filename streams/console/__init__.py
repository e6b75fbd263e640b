"""The operator console: traces, live metrics, the article's three questions and dead letters.

Why ``streams/`` and not ``connectors/``: the console is no channel edge. It observes the pipeline the
way ``chatstream trace``, ``stats`` and ``dlq`` already do (Jaeger's query API, the worker's
Prometheus endpoint, the pipeline's own topics) and reuses those commands' code; ``streams/`` is
where telemetry, metrics and the operator commands live.

Why a separate command (``chatstream console``) rather than a path of the gateway: the gateway is
the public surface that channels and end users reach, with their own credentials; the console shows
every tenant's turns and can re-inject dead letters. Keeping it in its own process on 127.0.0.1 with
its own operator token means a gateway exposed to the internet never carries operator routes, and a
console restart never drops a channel's webhook.

Modules: ``store`` (SQLite in the state folder, aggregates server-side), ``tail`` (follows the
pipeline's output topics into the store; the only module that builds a Kafka consumer), ``scrape``
(the worker's Prometheus endpoint in a bounded ring), ``jaeger`` (waterfalls and UI detection),
``questions`` (the three questions), ``app`` (the web app), ``synthetic`` (fills a store for load tests).
"""
