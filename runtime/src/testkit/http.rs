//! A small client for a node's admin endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use crate::node::admin_types::{ClusterStatus, Faults};

/// Why the admin endpoint could not be used.
#[derive(Debug, thiserror::Error)]
#[error("admin endpoint {addr}: {reason}")]
pub struct AdminError {
    /// The endpoint.
    pub addr: SocketAddr,
    /// What failed.
    pub reason: String,
}

/// Talks to one node's admin endpoint.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    agent: ureq::Agent,
    token: Option<String>,
}

impl AdminClient {
    /// A client for the endpoint at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        AdminClient {
            addr,
            agent,
            token: None,
        }
    }

    /// The same client, sending `token` as `Authorization: Bearer <token>` with every request.
    ///
    /// # Examples
    /// ```
    /// let client = colony_runtime::testkit::AdminClient::new("127.0.0.1:8401".parse().unwrap())
    ///     .with_token(Some("s3cret".into()));
    /// # let _ = client;
    /// ```
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.get(format!("http://{}/{path}", self.addr)))
    }

    fn post(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.post(format!("http://{}/{path}", self.addr)))
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        }
    }

    /// `GET /{path}` as text, with its status: for answers that are not JSON (`/metrics`) and
    /// for checking refusals.
    ///
    /// # Errors
    /// The endpoint is unreachable.
    pub fn get_text(&self, path: &str) -> Result<(u16, String), AdminError> {
        let response = self.get(path).call().map_err(|e| self.err(e))?;
        self.text(response)
    }

    /// `POST /{path}` with an empty body, as text with its status.
    ///
    /// # Errors
    /// The endpoint is unreachable.
    pub fn post_text(&self, path: &str) -> Result<(u16, String), AdminError> {
        let response = self.post(path).send_empty().map_err(|e| self.err(e))?;
        self.text(response)
    }

    fn text(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<(u16, String), AdminError> {
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(e))?;
        Ok((response.status().as_u16(), body))
    }

    fn err(&self, reason: impl ToString) -> AdminError {
        AdminError {
            addr: self.addr,
            reason: reason.to_string(),
        }
    }

    /// `GET /health`: whether the node says it is up.
    pub fn healthy(&self) -> bool {
        self.get("health").call().is_ok_and(|r| r.status() == 200)
    }

    /// `GET /cluster`.
    ///
    /// # Errors
    /// The endpoint is unreachable or answered something else.
    pub fn cluster(&self) -> Result<ClusterStatus, AdminError> {
        self.get_json("cluster")
    }

    /// `GET /stats` as loose JSON.
    ///
    /// # Errors
    /// The endpoint is unreachable or answered something else.
    pub fn stats(&self) -> Result<serde_json::Value, AdminError> {
        self.get_json("stats")
    }

    /// `GET /{name}`: a primitive's admin view (e.g. `locks`) as loose JSON.
    ///
    /// # Errors
    /// The endpoint is unreachable, has no such view, or answered something else.
    pub fn view(&self, name: &str) -> Result<serde_json::Value, AdminError> {
        self.get_json(name)
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let mut response = self.get(path).call().map_err(|e| self.err(e))?;
        if response.status() != 200 {
            return Err(self.err(format!("status {}", response.status())));
        }
        response.body_mut().read_json().map_err(|e| self.err(e))
    }

    /// `POST /actions/{name}`: runs an admin action and returns its JSON answer.
    ///
    /// # Errors
    /// The endpoint is unreachable, has no such action, or the action failed.
    pub fn action(&self, name: &str) -> Result<serde_json::Value, AdminError> {
        let mut response = self
            .post(&format!("actions/{name}"))
            .send_empty()
            .map_err(|e| self.err(e))?;
        if response.status() != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(self.err(format!("status {}: {}", response.status(), body.trim())));
        }
        response.body_mut().read_json().map_err(|e| self.err(e))
    }

    /// `POST /faults`: cut the node off from `blocked` (empty heals).
    ///
    /// # Errors
    /// The endpoint is unreachable or refused (fault injection off).
    pub fn set_faults(&self, blocked: Vec<SocketAddr>) -> Result<(), AdminError> {
        let response = self
            .post("faults")
            .send_json(Faults { blocked })
            .map_err(|e| self.err(e))?;
        if response.status() != 200 {
            return Err(self.err(format!("status {}", response.status())));
        }
        Ok(())
    }
}
