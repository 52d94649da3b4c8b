"""SAM 3 segmentation adapter (needs torch and the gated checkpoint)."""
