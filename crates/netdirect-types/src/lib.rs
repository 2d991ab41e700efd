//! NDK vocabulary types (work in progress).
#![forbid(unsafe_code)]
