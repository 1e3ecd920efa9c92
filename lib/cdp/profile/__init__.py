"""The golden record and 360° customer profile."""
