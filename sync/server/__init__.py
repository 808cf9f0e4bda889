"""The central server: the HTTP API (:mod:`sync.server.app`), accounts and the double-entry
ledger, terminals, journal ingest, the delta feed, phone codes, the service desk and the card
holders' business.  Runs as ``ykt server`` (:mod:`sync.server.cli`)."""
