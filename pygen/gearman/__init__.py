"""Gearman in Python: the protocol codec, one connection, the client, the worker and its per-server link."""
