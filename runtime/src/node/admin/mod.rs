//! The admin HTTP endpoint: the live cluster page at `/`, `/health`, `/cluster`, `/stats`, the
//! primitives' views and actions, and `/faults` on nodes started with fault injection; every
//! request but `GET /health` and `GET /` passes the token gate of [`auth`] first.

mod auth;
mod report;

pub use auth::AdminStats;
pub(crate) use auth::Gate;
pub use report::{ClusterStatus, ConsensusReport, Faults};

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Node;
use auth::Verdict;

pub(crate) struct AdminServer {
    stop: tokio::sync::oneshot::Sender<()>,
    addr: SocketAddr,
}

impl AdminServer {
    pub(crate) async fn serve(addr: SocketAddr, node: Node) -> std::io::Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut router = Router::new()
            .route("/", get(page))
            .route("/health", get(health))
            .route("/cluster", get(cluster))
            .route("/stats", get(stats))
            .route("/metrics", get(metrics))
            .route("/actions/{name}", post(action))
            // Other methods on a view's path get 404, as on any path nothing serves.
            .route("/{name}", get(view).fallback(nothing))
            .route("/{view}/{item}/{action}", post(item_action));
        // Absent, not merely refused, elsewhere: a production node has no such door.
        if node.config().fault_injection {
            router = router.route("/faults", post(faults));
        }
        let guarded = node.inner.admin_gate.has_token();
        let router = router
            .layer(axum::middleware::from_fn_with_state(node.clone(), gate))
            .with_state(node);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tracing::info!(%addr, token = guarded, "admin endpoint listening");
        if !guarded {
            tracing::warn!("no admin token set: the admin endpoint serves reads only");
        }
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        });
        Ok(AdminServer { stop, addr })
    }

    /// The address it listens on (the real port if 0 was asked).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// Lets a request through the token gate, or answers 401 / 403 in its place.
async fn gate(State(node): State<Node>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let verdict = node.inner.admin_gate.judge(
        request.method().as_str(),
        request.uri().path(),
        authorization,
    );
    match verdict {
        Verdict::Allow => next.run(request).await,
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid `Authorization: Bearer <token>` header is required\n",
        )
            .into_response(),
        Verdict::ReadOnly => (
            StatusCode::FORBIDDEN,
            "this node has no admin token: it serves reads only (set COLONY_ADMIN_TOKEN)\n",
        )
            .into_response(),
    }
}

/// The live cluster page: one static file built into the binary. It holds no data; its script
/// reads the JSON views with the token the operator gives it.
const PAGE: &str = include_str!("page.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Its own script and styles only: no other origin, no framing.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn nothing() -> StatusCode {
    StatusCode::NOT_FOUND
}

async fn health(State(node): State<Node>) -> impl IntoResponse {
    let state = node.local().state;
    if let Some(message) = node.maintenance() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("locked for maintenance: {message}\n"),
        )
    } else if state.is_up() {
        (StatusCode::OK, "up\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{state}\n"))
    }
}

async fn cluster(State(node): State<Node>) -> Json<ClusterStatus> {
    Json(ClusterStatus::of(&node))
}

async fn stats(State(node): State<Node>) -> Json<super::NodeStats> {
    Json(node.stats())
}

async fn faults(State(node): State<Node>, Json(faults): Json<Faults>) -> impl IntoResponse {
    let blocked: HashSet<SocketAddr> = faults.blocked.into_iter().collect();
    if node.set_blocked(blocked).await {
        (StatusCode::OK, "fault filter set\n")
    } else {
        (
            StatusCode::FORBIDDEN,
            "fault injection is off on this node (start it with --fault-injection)\n",
        )
    }
}

async fn view(State(node): State<Node>, Path(name): Path<String>) -> axum::response::Response {
    match node.run_admin_view(&name).await {
        Some(Ok(body)) => Json(body).into_response(),
        Some(Err(message)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("nothing at `/{name}`\n")).into_response(),
    }
}

async fn action(State(node): State<Node>, Path(name): Path<String>) -> axum::response::Response {
    match node.run_admin_action(&name).await {
        Some(Ok(body)) => Json(body).into_response(),
        Some(Err(message)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("no admin action named `{name}`\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(node): State<Node>) -> Response {
    let text = node.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn item_action(
    State(node): State<Node>,
    Path((view, item, action)): Path<(String, String, String)>,
) -> Response {
    match node.run_admin_item_action(&view, &action, &item).await {
        Some(Some(Ok(body))) => Json(body).into_response(),
        Some(Some(Err(message))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response()
        }
        Some(None) => {
            (StatusCode::NOT_FOUND, format!("no `{item}` in `/{view}`\n")).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("no admin action `{action}` on `/{view}`\n"),
        )
            .into_response(),
    }
}
