"""`stack up --brokers 3`: three KRaft nodes of one cluster, and topics that follow the cluster size."""

from __future__ import annotations

from stack.kafka import kafka_nodes
from stack.manager import Stack
from streams.config import Settings
from streams.topics import replicas_for, topic_specs


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_three_nodes_form_one_quorum_on_their_own_ports(tmp_path) -> None:
    s = Settings(home=tmp_path, kafka_brokers=3, kafka_port=22092, kafka_controller_port=22093, bind_host="127.0.0.1")
    nodes = kafka_nodes(s)
    assert [n.name for n in nodes] == ["kafka", "kafka2", "kafka3"]
    assert [(n.port, n.controller_port) for n in nodes] == [(22092, 22093), (22094, 22095), (22096, 22097)]
    props = [_props(n.render_server_properties()) for n in nodes]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@127.0.0.1:22093,2@127.0.0.1:22095,3@127.0.0.1:22097"
    }
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert props[2]["listeners"] == "PLAINTEXT://127.0.0.1:22096,CONTROLLER://127.0.0.1:22097"
    for p in props:
        assert p["offsets.topic.replication.factor"] == p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
    assert len({n.server_properties for n in nodes} | {n.data_dir for n in nodes}) == 6
    assert nodes[0].cluster_id() == nodes[2].cluster_id(), "one cluster id for every node"
    assert [s.name for s in Stack(s).services][:4] == ["kafka", "kafka2", "kafka3", "redis"]


def test_one_node_keeps_the_single_broker_layout(tmp_path) -> None:
    (node,) = kafka_nodes(Settings(home=tmp_path, kafka_brokers=1, bind_host="127.0.0.1", kafka_controller_port=9093))
    props = _props(node.render_server_properties())
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == props["min.insync.replicas"] == "1"


def test_topics_follow_the_cluster_size() -> None:
    s = Settings(replication_factor=None)
    assert [replicas_for(s, n) for n in (1, 2, 3, 5)] == [1, 2, 3, 3]
    assert replicas_for(s.derive(replication_factor=2), 3) == 2
    specs = topic_specs(s, 3)
    assert {spec.replication_factor for spec in specs} == {3}
    assert {spec.config["min.insync.replicas"] for spec in specs} == {"2"}
    assert all("min.insync.replicas" not in spec.config for spec in topic_specs(s, 1))
