//! Placement: which node owns a key.

mod rendezvous;

pub use rendezvous::{owner_by, owner_of};
