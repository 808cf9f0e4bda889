"""Receipt printers: :class:`drivers.printer.base.Printer`, ESC/POS printers on python-escpos
(:mod:`drivers.printer.escpos`)."""
