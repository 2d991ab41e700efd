//! The NDK objects of the software RNIC: the glue between the object model (`netdirect`), the
//! memory table, the queues and the transport.

pub mod limits;
