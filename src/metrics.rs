//! weft's own metrics.
