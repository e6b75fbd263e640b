"""The validate stage: PII redaction, groundedness, citations, escalation and blocking rules."""

from processors.validation.validator import Validator, Verdict

__all__ = ["Validator", "Verdict"]
