"""Build time only (the torch extra): bake a checkpoint into a served directory: export, quantize, prove."""
