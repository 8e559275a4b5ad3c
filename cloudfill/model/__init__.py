"""cloudfill.model."""
