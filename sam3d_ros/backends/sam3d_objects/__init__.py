"""SAM 3D Objects reconstruction adapter (needs the upstream package and checkpoint)."""
