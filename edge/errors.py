"""Exceptions of the terminal core.

::

    EdgeError
    ├── MoneyError          an amount that is not a valid number of fen
    ├── RuleError           input that breaks a rule of the card system (R1-R20)
    │   └── IdCardError     an ID-card number that is malformed or fails GB 11643
    ├── ConfigError         a configuration file or option that cannot be used
    ├── StoreError          the database failed (wraps sqlite3 and psycopg errors)
    │   ├── StoreConflict   a uniqueness or foreign-key constraint refused a write
    │   └── StoreRefused    a value the database cannot hold (PostgreSQL: text with NUL)
    ├── JournalError        the journal is damaged or cannot take a record
    └── CardRefused         a campus card whose data may not be used (``code`` says why:
                            foreign_card, bad_signature, clone, bad_layout, counters_damaged)
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error raised by the terminal core."""


class MoneyError(EdgeError, ValueError):
    pass


class RuleError(EdgeError, ValueError):
    pass


class IdCardError(RuleError):
    pass


class ConfigError(EdgeError):
    pass


class StoreError(EdgeError):
    pass


class StoreConflict(StoreError):
    pass


class StoreRefused(StoreError):
    """The database cannot hold a value it was given (PostgreSQL: a NUL character in text, a
    number out of range): bad input, not an unavailable database."""


class JournalError(EdgeError):
    pass


class CardRefused(EdgeError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
