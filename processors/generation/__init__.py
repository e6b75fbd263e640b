"""The generate stage: an ``LLMProvider`` interface, resilient OpenAI-compatible providers with
failover, an extractive no-LLM provider, and token-budgeted prompt assembly."""

from processors.generation.deadline import TurnDeadline
from processors.generation.extractive import ExtractiveProvider
from processors.generation.failover import FailoverProvider
from processors.generation.generator import Generator, build_generator
from processors.generation.http_provider import HttpxChatProvider
from processors.generation.openai_provider import OpenAIProvider
from processors.generation.provider import (
    AllProvidersFailedError,
    CircuitOpenError,
    Completion,
    FirstTokenTimeout,
    LLMProvider,
    PermanentError,
    ProviderError,
    RetryableError,
    StreamBroken,
    StreamingProvider,
)
from processors.circuit import CircuitBreaker, CircuitState
from processors.generation.resilience import ResilientProvider, RetryPolicy

__all__ = [
    "AllProvidersFailedError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Completion",
    "FirstTokenTimeout",
    "HttpxChatProvider",
    "ExtractiveProvider",
    "FailoverProvider",
    "Generator",
    "LLMProvider",
    "OpenAIProvider",
    "PermanentError",
    "ProviderError",
    "ResilientProvider",
    "RetryPolicy",
    "RetryableError",
    "StreamBroken",
    "StreamingProvider",
    "TurnDeadline",
    "build_generator",
]
