"""ykt terminal core: money, rules of the card system, journal, caches, transaction engines.

Public surface: :mod:`edge.money`, :mod:`edge.rules`, :mod:`edge.clock`, :mod:`edge.db`,
:mod:`edge.journal`, :mod:`edge.errors`.  The server (``sync.server``) imports the money, rules
and database modules from here so that every rule of the card system lives in one place.
"""
