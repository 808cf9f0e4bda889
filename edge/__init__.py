"""The terminal: transaction engines (POS; kiosk and gate to come), the signed journal, the
caches, the uplink to the server and the agents that run them.

Imports :mod:`sync` (the shared core, the wire and the client) and :mod:`drivers` (hardware),
never :mod:`sim` (docs/architecture.md).
"""
