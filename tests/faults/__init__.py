"""Fault tests: crashes, outages, bursts and bad input against a private stack (issue 5)."""
