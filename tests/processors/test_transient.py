"""One transient/permanent vocabulary for stages, edges and Redis callers."""

from __future__ import annotations

import asyncio

import redis.exceptions

from processors.backoff import is_transient, is_transient_redis_error
from streams import errors
from streams.codec import RegistryUnavailable
from streams.producer import ProduceError


def test_servers_down_or_slow_are_transient_and_bad_input_is_not() -> None:
    for exc in (ConnectionRefusedError(), TimeoutError(), asyncio.TimeoutError(), redis.exceptions.BusyLoadingError(),
                redis.exceptions.ReadOnlyError(), ProduceError("t: broker down"), RegistryUnavailable("registry down")):
        assert is_transient(exc), exc
    for exc in (ValueError("bad"), KeyError("x"), redis.exceptions.ResponseError("WRONGTYPE")):
        assert not is_transient(exc), exc


def test_a_refused_password_is_transient_only_where_the_caller_waits_forever() -> None:
    refused = redis.exceptions.AuthenticationError("invalid password")
    assert is_transient(refused)  # a stage waits (stops pulling) rather than dead-letter a good turn
    assert not is_transient(refused, auth_errors=False)
    assert not is_transient_redis_error(refused)


def test_streams_errors_is_the_same_classifier() -> None:
    assert errors.is_transient is is_transient
