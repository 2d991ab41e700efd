//! iWARP wire format (work in progress).
#![forbid(unsafe_code)]
