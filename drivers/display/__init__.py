"""Customer displays (pole / VFD displays facing the diner): :mod:`drivers.display.base`,
the Epson DM-D command set on a serial port (:mod:`drivers.display.dmd`)."""
