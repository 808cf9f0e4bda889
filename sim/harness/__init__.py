"""Processes for the tests, the benchmarks and the demo, each started one way:

- :mod:`.procs`: a free port (per pytest-xdist worker), the ``ykt`` command line, polling,
  the one wait until a child answers HTTP (:func:`~.procs.wait_http`), polite stops;
- :mod:`.ykt`: ``ykt server`` and ``ykt pos`` as child processes (:class:`~.ykt.ServerProcess`,
  :class:`~.ykt.PosProcess`), and :class:`~.ykt.AdminApi`, driving a running server as the
  desk does;
- :mod:`.pcscd`: a private pcscd with vpcd virtual readers (also ``ykt sim reader``);
- :mod:`.pg`: a throwaway PostgreSQL cluster.
"""
