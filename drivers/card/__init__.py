"""Card drivers: the commands of a card type, spoken over a :class:`~drivers.reader.base.PresentCard`."""
