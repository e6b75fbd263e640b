"""``chatstream deliver``: replies from chat.outbound back to the channel they came from."""
