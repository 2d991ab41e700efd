//! The NDK objects of the software RNIC: the glue between the object model (`netdirect`), the
//! memory table, the completion and receive queues, and the transport.

pub mod adapter;
pub mod connector;
pub mod cq;
pub mod lifetime;
pub mod limits;
pub mod listener;
pub mod mr;
pub mod mw;
pub mod pd;
pub mod ports;
pub mod qp;
pub mod shared_endpoint;
pub mod srq;
