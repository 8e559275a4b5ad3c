"""cloudfill.evaluation."""
