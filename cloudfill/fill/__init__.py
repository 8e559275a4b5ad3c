"""cloudfill.fill."""
