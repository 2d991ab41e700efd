//! The software iWARP RNIC (being written).
#![deny(unsafe_code)]

pub mod cq;
pub mod memory;
pub mod objects;
pub mod srq;
pub mod transport;

pub use objects::adapter::{SoftAdapter, SoftProvider};
