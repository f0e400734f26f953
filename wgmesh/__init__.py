"""wgmesh: a WireGuard full mesh from one command."""

__version__ = "0.1.0"
