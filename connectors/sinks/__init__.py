"""Downstream consumers that push chatstream results into CRM and ticketing tools."""
