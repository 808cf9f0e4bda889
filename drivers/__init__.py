"""Hardware behind small interfaces, one ``typing.Protocol`` per device kind in
``drivers/<kind>/base.py``; devices are named by URL and opened by :func:`drivers.registry.open_device`.
"""
