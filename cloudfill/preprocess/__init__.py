"""cloudfill.preprocess."""
