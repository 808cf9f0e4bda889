"""The campus card application on MIFARE Classic 1K: layout (:mod:`edge.card.layout`), keys
(:mod:`edge.card.keys`), reading/writing a card (:mod:`edge.card.app`) and issuing
(:mod:`edge.card.issuer`).  Documented in docs/card-format.md."""
