"""isobench: the cost of isolation, measured."""

__version__ = "0.1.0"
