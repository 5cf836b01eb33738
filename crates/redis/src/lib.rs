//! The Redis status store (work in progress).
#![forbid(unsafe_code)]
