//! The Network Direct (NDK) object model (work in progress: registered memory first).
#![deny(unsafe_code)]

pub mod memory;

pub use memory::Buffer;
