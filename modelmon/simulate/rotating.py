"""The simulator's rotating live log: the client's `RotatingLog`, shared (modelmon/client/rotating.py)."""
from modelmon.client.rotating import RotatingLog, parse_size

__all__ = ["RotatingLog", "parse_size"]
