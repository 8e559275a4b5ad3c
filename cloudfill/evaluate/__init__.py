"""cloudfill.evaluate."""
