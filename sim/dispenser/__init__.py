"""Simulated card dispensers: the physical state (:mod:`.mechanism`), the CRT-591 on a
pseudo-terminal in its own process (:mod:`.crt591` the device's protocol, :mod:`.process` the
process, :mod:`.cli` ``ykt sim dispenser``), and the in-process ``sim://`` one (:mod:`.local`).
"""
