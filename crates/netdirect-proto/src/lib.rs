//! The iWARP protocol engine, sans I/O: bytes and time in; frames to send, placement
//! decisions, completions and timers out.
//!
//! This crate decides what iWARP traffic means for a connection and what to send next. It has no
//! sockets, no threads, no clocks of its own and never touches registered memory: the I/O driver
//! above it (the soft RNIC) owns those, feeds the engine what arrived and when, and carries out
//! what the engine asks for. The same inputs always give the same outputs, so two engines can
//! be run against each other in a test with simulated time and arbitrary re-chunking of the
//! byte stream.
//!
//! | piece | module |
//! |---|---|
//! | MPA Request/Reply, CRC/marker/IRD/ORD/RTR negotiation | [`handshake`] |
//! | counter cells the engine and its driver count into | [`counters`] |
//! | RDMAP stream: send queue, segmentation, placement decisions, IRD/ORD, Terminates, completions | [`stream`] |
//!
//! The deterministic two-engine harness (`tests/harness.rs`) runs both halves against each other
//! over an in-memory pipe that re-chunks the stream at random, with simulated time.
//!
//! # Threading and locks
//!
//! None here. Every engine object is plain data driven through `&mut self` by one owner at a
//! time; the driver decides which thread that is and what locks protect it. The one thing a
//! stream shares is its [`counters::Cells`] (relaxed atomics others may read at any time, and
//! a leaf lock taken only to count a Terminate).
#![forbid(unsafe_code)]

pub mod counters;
pub mod handshake;
pub mod provider_error;
pub mod stream;

pub use handshake::{Handshake, MpaConfig, Negotiated, ReadLimits, Role, RtrKind};
pub use provider_error::ProviderError;
