"""DS2F in JAX: dual-stream super-resolution segmentation (Qiu et al., TPAMI 2024)."""
