//! Node-local events: a typed bus with one bounded queue per listener.
//!
//! A slow listener never slows the publisher and never grows memory: when its queue is full the
//! event is dropped for that listener and counted, both on its [`Subscription`] and in the bus
//! totals ([`Events::dropped`]).

mod bus;

pub use bus::{Events, Subscription};
