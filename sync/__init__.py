"""The wire between terminals and the central server.

- :mod:`sync.protocol`: canonical bytes, journal records, hash chain, request signatures (both ends)
- :mod:`sync.crypto`: Ed25519 keys and signatures
- :mod:`sync.client`: the terminal-side HTTP client
- :mod:`sync.server`: the central server (API, ledger, hotlist, delta feed)
- :mod:`sync.errors`: the exception tree
"""
