//! Colony's integration tests: multi-process clusters of the `colony` binary under real faults,
//! and the public API on nodes started in this process. One binary, not one per file: each
//! test binary links the whole runtime, and 23 links were a good part of CI's build. Run one
//! area with `cargo test --test cluster -- locks::`, one test by its name as usual.
//!
//! Multi-process tests take [`common::serial`]: one cluster at a time on two cores keeps
//! failure detection honest.

mod common;

mod admin;
mod advertise;
mod caches;
mod caches_api;
mod cli;
mod components;
mod consensus;
mod demo;
mod events;
mod executor;
mod executor_api;
mod executor_limits;
mod homes;
mod lifecycle;
mod locks;
mod locks_api;
mod membership;
mod messaging;
mod page;
mod scheduler;
mod scheduler_api;
mod security;
mod transport;
