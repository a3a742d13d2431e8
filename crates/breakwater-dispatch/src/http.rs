//! The HTTP listener: how many connections it serves at once and how long
//! a client may take, so that slow or idle clients cannot take every file
//! descriptor and lock everyone else out.
//!
//! - At most `max_connections` connections are served at once; the next
//!   ones wait in the system's accept queue until one closes.
//! - A connection that does not send a whole request head within
//!   `header_read_timeout_ms` (half a head, or nothing at all, including
//!   between two requests on a kept-alive connection) is closed.
//! - A body not sent within `body_read_timeout_ms` is answered `408`
//!   (`POST /events` reads its body whole, see `app.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// How long shutdown waits for open connections to finish their requests.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` within `limits` until `stop` is cancelled,
/// then lets the requests in progress finish (up to [`CLOSE_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpConfig,
    stop: CancellationToken,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut warned = false;
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = open.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait a moment, then go on.
                    if !warned {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        warned = false;
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A closed or timed-out connection is the client's business.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the shutdown deadline were closed");
    }
}
