//! One source of settings, with every value optional, and the stacking of sources.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::consensus::config::DEFAULT_VOTER_GRACE;

use super::{
    ConfigError, DEFAULT_MAX_MESSAGE_BYTES, MembershipTimings, NodeConfig, Secret, majority,
};

/// The settings one source gives. Field names are those of the TOML file.
///
/// # Examples
/// ```
/// use colony_runtime::config::ConfigLayer;
/// let file: ConfigLayer = toml::from_str(r#"
///     name = "alpha"
///     bind = "127.0.0.1:7401"
///     cookie = "s3cret"
///     home = "/tmp/colony-alpha"
/// "#).unwrap();
/// let flags = ConfigLayer { name: Some("beta".into()), ..Default::default() };
/// let config = flags.over(file).resolve().unwrap();
/// assert_eq!(config.name, "beta");
/// assert_eq!(config.bind.port(), 7401);
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Node name.
    pub name: Option<String>,
    /// Local home directory.
    pub home: Option<PathBuf>,
    /// Shared home directory; defaults to `<home>/shared`.
    pub shared_home: Option<PathBuf>,
    /// `host:port` for TCP and UDP.
    pub bind: Option<String>,
    /// Seed `host:port` addresses.
    pub seeds: Option<Vec<String>>,
    /// Cluster cookie.
    pub cookie: Option<String>,
    /// Expected number of nodes.
    pub cluster_size: Option<usize>,
    /// Explicit quorum; defaults to a majority of `cluster_size`.
    pub quorum: Option<usize>,
    /// SWIM probe period in milliseconds.
    pub probe_period_ms: Option<u64>,
    /// SWIM direct-probe timeout in milliseconds.
    pub probe_rtt_ms: Option<u64>,
    /// Time from suspect to down in milliseconds.
    pub suspect_to_down_ms: Option<u64>,
    /// Largest request or response in bytes.
    pub max_message_bytes: Option<usize>,
    /// Default request timeout in milliseconds.
    pub request_timeout_ms: Option<u64>,
    /// Cluster lock lease in milliseconds (a cluster setting: every node must agree).
    pub lock_lease_ms: Option<u64>,
    /// How long a voter may be unreachable before the group replaces it, in milliseconds.
    pub voter_grace_ms: Option<u64>,
    /// Admin endpoint `host:port`.
    pub admin: Option<String>,
    /// The admin endpoint's bearer token; prefer `COLONY_ADMIN_TOKEN` or the local home's
    /// `admin-token` file.
    pub admin_token: Option<String>,
    /// `host:port` peers use to reach this node, when it differs from `bind` (NAT, containers).
    pub advertise: Option<String>,
    /// Accept fault-injection commands (tests only).
    pub fault_injection: Option<bool>,
    /// Wall-clock offset in milliseconds (tests only, needs `fault_injection`).
    pub clock_offset_ms: Option<i64>,
}

impl ConfigLayer {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::ReadFile`] or [`ConfigError::ParseFile`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Stacks `self` over `lower`: every value set in `self` wins.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            name: self.name.or(lower.name),
            home: self.home.or(lower.home),
            shared_home: self.shared_home.or(lower.shared_home),
            bind: self.bind.or(lower.bind),
            seeds: self.seeds.or(lower.seeds),
            cookie: self.cookie.or(lower.cookie),
            cluster_size: self.cluster_size.or(lower.cluster_size),
            quorum: self.quorum.or(lower.quorum),
            probe_period_ms: self.probe_period_ms.or(lower.probe_period_ms),
            probe_rtt_ms: self.probe_rtt_ms.or(lower.probe_rtt_ms),
            suspect_to_down_ms: self.suspect_to_down_ms.or(lower.suspect_to_down_ms),
            max_message_bytes: self.max_message_bytes.or(lower.max_message_bytes),
            request_timeout_ms: self.request_timeout_ms.or(lower.request_timeout_ms),
            lock_lease_ms: self.lock_lease_ms.or(lower.lock_lease_ms),
            voter_grace_ms: self.voter_grace_ms.or(lower.voter_grace_ms),
            admin: self.admin.or(lower.admin),
            admin_token: self.admin_token.or(lower.admin_token),
            advertise: self.advertise.or(lower.advertise),
            fault_injection: self.fault_injection.or(lower.fault_injection),
            clock_offset_ms: self.clock_offset_ms.or(lower.clock_offset_ms),
        }
    }

    /// Fills what is unset with defaults and validates the result.
    ///
    /// Defaults: home `./colony-home`, shared home `<home>/shared`, bind `127.0.0.1:7400`, no
    /// seeds, cluster size 1, quorum a majority, name `node-<port>`. The cookie has no default.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] for the cookie, [`ConfigError::Invalid`] for a bad value.
    pub fn resolve(self) -> Result<NodeConfig, ConfigError> {
        let bind = parse_addr("bind", self.bind.as_deref().unwrap_or("127.0.0.1:7400"))?;
        let seeds = self
            .seeds
            .unwrap_or_default()
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_addr("seeds", s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let home = self.home.unwrap_or_else(|| PathBuf::from("colony-home"));
        let shared_home = self.shared_home.unwrap_or_else(|| home.join("shared"));
        let cookie = self.cookie.ok_or(ConfigError::Missing {
            setting: "cookie",
            env: "COLONY_COOKIE",
        })?;
        let cluster_size = self.cluster_size.unwrap_or(1);
        let defaults = MembershipTimings::default();
        let ms = Duration::from_millis;
        let config = NodeConfig {
            name: self.name.unwrap_or_else(|| format!("node-{}", bind.port())),
            home,
            shared_home,
            bind,
            seeds,
            cookie: Secret::new(cookie),
            cluster_size,
            quorum: self.quorum.unwrap_or(majority(cluster_size)),
            timings: MembershipTimings {
                probe_period: self.probe_period_ms.map_or(defaults.probe_period, ms),
                probe_rtt: self.probe_rtt_ms.map_or(defaults.probe_rtt, ms),
                suspect_to_down: self.suspect_to_down_ms.map_or(defaults.suspect_to_down, ms),
            },
            max_message_bytes: self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            request_timeout: ms(self.request_timeout_ms.unwrap_or(5_000)),
            lock_lease: ms(self.lock_lease_ms.unwrap_or(5_000)),
            voter_grace: self.voter_grace_ms.map_or(DEFAULT_VOTER_GRACE, ms),
            admin: self.admin.map(|a| parse_addr("admin", &a)).transpose()?,
            admin_token: self.admin_token.map(Secret::new),
            advertise: self
                .advertise
                .map(|a| parse_addr("advertise", &a))
                .transpose()?,
            fault_injection: self.fault_injection.unwrap_or(false),
            clock_offset_ms: self.clock_offset_ms.unwrap_or(0),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Parses `host:port`, resolving a host name to its first address.
pub(crate) fn parse_addr(setting: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { setting, reason };
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| invalid(format!("`{text}` is not a host:port address ({e})")))?
        .next()
        .ok_or_else(|| invalid(format!("`{text}` resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> ConfigLayer {
        ConfigLayer {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn upper_layer_wins_and_lower_fills_gaps() {
        let file = ConfigLayer {
            cookie: Some("c".into()),
            cluster_size: Some(5),
            ..layer("file")
        };
        let env = layer("env");
        let flags = ConfigLayer::default();
        let config = flags.over(env.over(file)).resolve().unwrap();
        assert_eq!(config.name, "env");
        assert_eq!(config.cluster_size, 5);
        assert_eq!(config.quorum, 3);
    }

    #[test]
    fn missing_cookie_is_named() {
        let err = layer("x").resolve().unwrap_err();
        assert!(err.to_string().contains("COLONY_COOKIE"), "{err}");
    }

    #[test]
    fn quorum_above_cluster_size_is_refused() {
        let err = ConfigLayer {
            cookie: Some("c".into()),
            cluster_size: Some(3),
            quorum: Some(4),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                setting: "quorum",
                ..
            }
        ));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<ConfigLayer>("nmae = \"typo\"").is_err());
    }

    #[test]
    fn a_clock_offset_needs_fault_injection() {
        let layer: ConfigLayer = toml::from_str("cookie = \"c\"\nclock_offset_ms = -200").unwrap();
        let err = layer.clone().resolve().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "clock_offset_ms",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("fault_injection"), "{err}");
        let config = ConfigLayer {
            fault_injection: Some(true),
            ..layer
        }
        .resolve()
        .unwrap();
        assert_eq!(config.clock_offset_ms, -200);
        assert_eq!(config.wall_clock().offset(), -200);
    }

    #[test]
    fn the_voter_grace_period_defaults_to_30_s_and_is_refused_out_of_range() {
        let layer = ConfigLayer {
            cookie: Some("c".into()),
            ..Default::default()
        };
        assert_eq!(
            layer.clone().resolve().unwrap().voter_grace,
            Duration::from_secs(30)
        );
        for bad in [1_999, 86_400_001] {
            let err = ConfigLayer {
                voter_grace_ms: Some(bad),
                ..layer.clone()
            }
            .resolve()
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        setting: "voter_grace_ms",
                        ..
                    }
                ),
                "{err}"
            );
        }
        let config = ConfigLayer {
            voter_grace_ms: Some(5_000),
            ..layer
        };
        assert_eq!(
            config.resolve().unwrap().voter_grace,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn shared_home_defaults_under_home() {
        let config = ConfigLayer {
            cookie: Some("c".into()),
            home: Some("/data/n1".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.shared_home, PathBuf::from("/data/n1/shared"));
    }
}
