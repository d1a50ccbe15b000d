//! Image store (placeholder while it is written).
