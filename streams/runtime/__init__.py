"""The one consumer runtime of chatstream, over confluent-kafka's public API.

* ``clients``: the one place that configures and builds Kafka consumers, producers and admin clients;
* ``lane``: one handler's share of a consumer: a backlog, an ``InFlightWindow`` and its acked offsets;
* ``consumer``: batched consumption in a thread, back-pressure by pausing partitions, ordered commits,
  revocation that drains and commits before partitions move, graceful stop;
* ``worker``: ``chatstream worker``: the stages of ``streams.pipeline`` on one consumer;
* ``tail``: a group-less reader of every partition from a point in time (the gateway's reply tail).
"""
