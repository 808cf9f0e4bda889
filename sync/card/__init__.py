"""The campus card application on MIFARE Classic 1K: layout (:mod:`sync.card.layout`), keys
(:mod:`sync.card.keys`), reading/writing a card (:mod:`sync.card.app`) and issuing
(:mod:`sync.card.desk`).  Documented in docs/card-format.md."""
