"""The edges: inbound channels (gateway), outbound delivery, CRM/ticketing sinks."""
