//! Who may use the admin endpoint: the bearer-token check, decided apart from HTTP.
//!
//! With a token configured, every request but `GET /health` and `GET /` (the cluster page, a
//! static file that asks for the token itself) must carry `Authorization: Bearer <token>`. Without one the endpoint only listens on loopback (checked
//! at start) and serves reads alone: nobody may change a node whose operator set no secret.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What the gate says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve it.
    Allow,
    /// 401: the token is missing or wrong.
    Unauthorized,
    /// 403: no token is configured, and the request would change something.
    ReadOnly,
}

/// The refusals counted so far, in `/stats` as `admin`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AdminStats {
    /// Requests refused with 401 (missing or wrong token).
    pub unauthorized: u64,
    /// Requests refused with 403 (a change asked of a node without a token).
    pub read_only_refused: u64,
}

/// The admin endpoint's gate: the configured token (as its digest) and the refusal counters.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    token: Option<[u8; 32]>,
    unauthorized: AtomicU64,
    read_only_refused: AtomicU64,
}

/// Equal-length digests are compared, so the comparison's time says nothing of the token's
/// content nor of its length.
fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Gate {
    /// A gate asking for `token`, or a read-only gate without one.
    pub(crate) fn new(token: Option<&str>) -> Self {
        Gate {
            token: token.map(|t| digest(t.as_bytes())),
            ..Default::default()
        }
    }

    /// Whether a token is configured.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Judges a request by its method, path and `Authorization` header, and counts refusals.
    pub(crate) fn judge(&self, method: &str, path: &str, authorization: Option<&[u8]>) -> Verdict {
        let verdict = self.verdict(method, path, authorization);
        match verdict {
            Verdict::Allow => {}
            Verdict::Unauthorized => {
                self.unauthorized.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::ReadOnly => {
                self.read_only_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        verdict
    }

    fn verdict(&self, method: &str, path: &str, authorization: Option<&[u8]>) -> Verdict {
        let read = method == "GET" || method == "HEAD";
        if read && (path == "/health" || path == "/") {
            return Verdict::Allow;
        }
        let Some(expected) = &self.token else {
            return if read {
                Verdict::Allow
            } else {
                Verdict::ReadOnly
            };
        };
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let presented = authorization
            .filter(|h| h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|h| &h[7..]);
        match presented {
            Some(token) if bool::from(digest(token.trim_ascii()).ct_eq(expected)) => Verdict::Allow,
            _ => Verdict::Unauthorized,
        }
    }

    /// The refusals so far.
    pub(crate) fn stats(&self) -> AdminStats {
        AdminStats {
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            read_only_refused: self.read_only_refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_open_and_everything_else_needs_the_token() {
        let gate = Gate::new(Some("s3cret"));
        assert_eq!(gate.judge("GET", "/health", None), Verdict::Allow);
        assert_eq!(gate.judge("POST", "/health", None), Verdict::Unauthorized);
        assert_eq!(
            gate.judge("GET", "/", None),
            Verdict::Allow,
            "the page holds no data"
        );
        assert_eq!(gate.judge("POST", "/", None), Verdict::Unauthorized);
        assert_eq!(gate.judge("GET", "/cluster", None), Verdict::Unauthorized);
        let wrong = gate.judge("GET", "/cluster", Some(b"Bearer s3cres"));
        assert_eq!(wrong, Verdict::Unauthorized);
        let longer = gate.judge("GET", "/cluster", Some(b"Bearer s3cret2"));
        assert_eq!(longer, Verdict::Unauthorized);
        assert_eq!(
            gate.judge("GET", "/cluster", Some(b"Basic s3cret")),
            Verdict::Unauthorized
        );
        let right = gate.judge("POST", "/actions/x", Some(b"Bearer s3cret"));
        assert_eq!(right, Verdict::Allow);
        let lower = gate.judge("GET", "/stats", Some(b"bearer  s3cret "));
        assert_eq!(lower, Verdict::Allow);
        let case = gate.judge("GET", "/stats", Some(b"Bearer S3CRET"));
        assert_eq!(case, Verdict::Unauthorized);
        assert_eq!(gate.stats().unauthorized, 7);
        assert_eq!(gate.stats().read_only_refused, 0);
    }

    #[test]
    fn without_a_token_reads_pass_and_changes_are_refused() {
        let gate = Gate::new(None);
        assert!(!gate.has_token());
        assert_eq!(gate.judge("GET", "/locks", None), Verdict::Allow);
        assert_eq!(gate.judge("POST", "/actions/x", None), Verdict::ReadOnly);
        let guessed = gate.judge("POST", "/faults", Some(b"Bearer anything"));
        assert_eq!(guessed, Verdict::ReadOnly);
        assert_eq!(gate.stats().read_only_refused, 2);
    }
}
