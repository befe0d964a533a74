//! The environment variables every seeded simulation reads: which seed to replay, and how many
//! times as many seeds a soak run tries.

/// The seed to replay, from `COLONY_SIM_SEED` (`None`: unset or not a number).
pub fn replay_seed() -> Option<u64> {
    std::env::var("COLONY_SIM_SEED").ok()?.parse().ok()
}

/// How many times as many seeds to run, from `COLONY_SIM_SOAK` (1 unless set to a number).
pub fn soak() -> u64 {
    std::env::var("COLONY_SIM_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}
