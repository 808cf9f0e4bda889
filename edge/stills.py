"""The QR codes of a still picture (a photo of a receipt or a phone screen), for the commands
that verify one (``ykt verify-code``, ``ykt verify-receipt``)."""

from __future__ import annotations

from pathlib import Path

from drivers.errors import DriverError
from drivers.qr.decoders import get_decoder, read_image
from edge.errors import VerifyError
from sync.errors import ConfigError


def code_in(path: Path, decoder: str, prefix: str = "") -> str:
    """The text of the picture's QR code: the first that starts with ``prefix`` when one does,
    else the first found.  An unreadable file or an unknown decoder is ``ConfigError``; a
    picture without a code, or a decoder failure, ``VerifyError``."""
    try:
        texts = get_decoder(decoder).decode_still(read_image(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    except DriverError as exc:
        raise VerifyError(str(exc)) from exc
    if not texts:
        raise VerifyError(f"no QR code found in {path}")
    found = [t for t in texts if prefix and t.startswith(prefix)]
    return (found or texts)[0]
