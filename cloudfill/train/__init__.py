"""cloudfill.train."""
