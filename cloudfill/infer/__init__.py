"""cloudfill.infer."""
