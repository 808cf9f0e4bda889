"""PIN pads (the diner keys the consumption password there): :mod:`drivers.pinpad.base`, the
STX/ETX/LRC framed serial protocol (:mod:`drivers.pinpad.framed`)."""
