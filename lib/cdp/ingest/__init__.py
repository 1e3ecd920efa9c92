"""Landing files → bronze Delta tables."""
