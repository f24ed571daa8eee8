"""Producers: the publish path and the generation lifecycle. Knows the bus, not WebSockets."""
