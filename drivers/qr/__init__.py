"""QR sources: cameras read through OpenCV, serial QR scanners, and the decoders behind them."""
