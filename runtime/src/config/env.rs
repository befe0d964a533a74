//! Settings from the environment.

use super::ConfigLayer;

/// Reads `COLONY_HOME`, `COLONY_SHARED_HOME`, `COLONY_COOKIE` and `COLONY_ADMIN_TOKEN` through `get`
/// (pass `|k| std::env::var(k).ok()` for the process environment).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> ConfigLayer {
    let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
    ConfigLayer {
        home: non_empty("COLONY_HOME").map(Into::into),
        shared_home: non_empty("COLONY_SHARED_HOME").map(Into::into),
        cookie: non_empty("COLONY_COOKIE"),
        admin_token: non_empty("COLONY_ADMIN_TOKEN"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_variables_and_ignores_empty_ones() {
        let layer = from_env(|k| match k {
            "COLONY_HOME" => Some("/h".into()),
            "COLONY_SHARED_HOME" => Some(String::new()),
            "COLONY_COOKIE" => Some("c".into()),
            "COLONY_ADMIN_TOKEN" => Some("t".into()),
            _ => None,
        });
        assert_eq!(layer.home.as_deref(), Some(std::path::Path::new("/h")));
        assert_eq!(layer.shared_home, None);
        assert_eq!(layer.cookie.as_deref(), Some("c"));
        assert_eq!(layer.admin_token.as_deref(), Some("t"));
    }
}
