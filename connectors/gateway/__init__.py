"""``chatstream gateway``: the ASGI service where channel traffic enters chatstream."""
