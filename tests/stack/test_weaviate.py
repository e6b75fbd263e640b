"""Weaviate stores our own vectors and answers near-vector and hybrid queries over gRPC (weaviate-client v4)."""

from __future__ import annotations

import uuid

import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject
from weaviate.classes.init import Auth
from weaviate.classes.query import MetadataQuery

from stack.weaviate import Weaviate
from streams.config import Settings

DOCS = {
    "refunds": ("Refunds are paid back to the card within 30 days of the request.", [1.0, 0.0, 0.0, 0.0]),
    "passwords": ("To reset a forgotten password open the login page and follow the email link.", [0.0, 1.0, 0.0, 0.0]),
    "shipping": ("Parcels ship within two business days from our warehouse.", [0.0, 0.0, 1.0, 0.0]),
}


@pytest.fixture
def client(settings: Settings):
    client = weaviate.connect_to_local(
        host=settings.weaviate_host, port=settings.weaviate_http_port, grpc_port=settings.weaviate_grpc_port,
        auth_credentials=Auth.api_key(key) if (key := settings.stack_secret("weaviate_api_key")) else None,
    )
    yield client
    client.close()


@pytest.fixture
def collection(client):
    name = f"StackTest{uuid.uuid4().hex[:8]}"
    collection = client.collections.create(
        name,
        vector_config=Configure.Vectors.self_provided(),
        properties=[Property(name="doc_id", data_type=DataType.TEXT), Property(name="text", data_type=DataType.TEXT)],
    )
    yield collection
    client.collections.delete(name)
    assert not client.collections.exists(name)


@pytest.mark.stack
def test_own_vectors_near_vector_and_hybrid(collection) -> None:
    result = collection.data.insert_many(
        [DataObject(properties={"doc_id": doc_id, "text": text}, vector=vector) for doc_id, (text, vector) in DOCS.items()]
    )
    assert not result.has_errors, result.errors
    assert len(collection) == len(DOCS)

    near = collection.query.near_vector(
        near_vector=[0.1, 0.05, 0.9, 0.0], limit=2, return_metadata=MetadataQuery(distance=True)
    )
    assert [o.properties["doc_id"] for o in near.objects][0] == "shipping"
    assert near.objects[0].metadata.distance < near.objects[1].metadata.distance

    # Keyword half alone (alpha=0): BM25 finds the password document by its words.
    keyword = collection.query.hybrid(query="forgotten password", vector=[1.0, 0.0, 0.0, 0.0], alpha=0.0, limit=1)
    assert keyword.objects[0].properties["doc_id"] == "passwords"
    # Vector half alone (alpha=1): the same text, our vector decides.
    vector = collection.query.hybrid(query="forgotten password", vector=[1.0, 0.0, 0.0, 0.0], alpha=1.0, limit=1)
    assert vector.objects[0].properties["doc_id"] == "refunds"
    # Both halves agreeing: the fused ranking puts that document first.
    both = collection.query.hybrid(
        query="refunds card", vector=[0.9, 0.1, 0.0, 0.0], alpha=0.5, limit=3, return_metadata=MetadataQuery(score=True)
    )
    assert both.objects[0].properties["doc_id"] == "refunds"


def test_environment_pins_ports_and_loopback(tmp_path) -> None:
    settings = Settings(home=tmp_path, weaviate_http_port=18080, weaviate_grpc_port=15051, weaviate_gossip_port=17946, weaviate_data_port=17947,
                        weaviate_raft_port=18300, weaviate_raft_rpc_port=18301)
    service = Weaviate(settings)
    env = service.environment()
    assert env["GRPC_PORT"] == "15051"
    assert env["CLUSTER_GOSSIP_BIND_PORT"] == "17946" and env["CLUSTER_DATA_BIND_PORT"] == "17947"
    assert env["RAFT_PORT"] == "18300" and env["RAFT_INTERNAL_RPC_PORT"] == "18301"
    assert env["CLUSTER_BIND_ADDR"] == "127.0.0.1"
    assert env["DEFAULT_VECTORIZER_MODULE"] == "none" and env["ENABLE_MODULES"] == ""
    assert env["PERSISTENCE_DATA_PATH"].startswith(str(tmp_path.resolve()))
    assert {p.number for p in service.ports()} == {18080, 15051, 17946, 17947, 18300, 18301}


def test_hybrid_candidates_come_from_the_settings(tmp_path) -> None:
    """Each half of a hybrid search fetches QUERY_HYBRID_MAXIMUM_RESULTS objects before fusing;
    20 instead of Weaviate's 100 cut its CPU per query 2.3x at 11k chunks (bench --kb, issue 13)."""
    assert Weaviate(Settings(home=tmp_path)).environment()["QUERY_HYBRID_MAXIMUM_RESULTS"] == "20"
    env = Weaviate(Settings(home=tmp_path, weaviate_hybrid_max_results=50)).environment()
    assert env["QUERY_HYBRID_MAXIMUM_RESULTS"] == "50"
