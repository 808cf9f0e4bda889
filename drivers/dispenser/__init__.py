"""Card dispensers: the interface (:mod:`drivers.dispenser.base`) and the Creator CRT-591 serial
driver (:mod:`drivers.dispenser.crt591`, frames in :mod:`drivers.dispenser.crt591_frames`)."""
