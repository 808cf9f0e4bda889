"""Simulated hardware and people for test engineers: readers and cards, and the ``ykt sim``
commands that drive a running agent."""
