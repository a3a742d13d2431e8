//! The tower layer: `tower-test` mocks for each rule, and a real axum server
//! on 127.0.0.1 end to end.
#![cfg(feature = "tower")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::layer::{
    AllErrors, BoxError, CallTimeout, CircuitBreakerLayer, CircuitBreakerService, CircuitOpen,
    Classify, HttpStatus, PerKeyCircuitBreakerLayer, ResponseFuture,
};
use breakwater::PerEndpointCircuitBreaker;
use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Verdict};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Response = http::Response<()>;

/// A breaker that opens after two outcomes at 50% failures, stays open 1 s
/// (no jitter) and closes after `probes` successful probes.
fn breaker(probes: usize) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 2,
        failure_threshold: 0.5,
        open_timeout_ms: 1_000,
        jitter_ratio: 0.0,
        half_open_max_requests: probes,
        ..Default::default()
    }))
}

fn status(code: u16) -> Response {
    http::Response::builder().status(code).body(()).unwrap()
}

/// The mock answers the next request with `res`; the call's result.
async fn exchange<S>(
    svc: &mut S,
    handle: &mut mock::Handle<&'static str, Response>,
    res: Response,
) -> Result<Response, BoxError>
where
    S: Service<&'static str, Response = Response, Error = BoxError>,
{
    let fut = svc.ready().await.unwrap().call("req");
    let (_, send) = handle
        .next_request()
        .await
        .expect("the request reached the mock");
    send.send_response(res);
    fut.await
}

fn open_of(err: &BoxError) -> CircuitOpen {
    *err.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("expected a rejection, got {err}"))
}

mod support;

/// Two requests the mock answers with an error: enough to open
/// [`breaker`]'s breaker.
async fn fail_twice<S>(svc: &mut S, handle: &mut mock::Handle<&'static str, Response>)
where
    S: Service<&'static str, Response = Response, Error = BoxError>,
{
    for _ in 0..2 {
        let fut = svc.ready().await.unwrap().call("req");
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(Boom(1));
        fut.await.unwrap_err();
    }
}

use support::{send, send_sync, Boom};

#[tokio::test(start_paused = true)]
async fn rejections_never_reach_the_inner_service() {
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);

    // Forced open: no wait to advise.
    breaker.force_open();
    let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, None);
    assert_eq!(err.to_string(), "circuit open");
    assert!(handle.poll_request().is_pending(), "the mock saw a request");

    // Opened by failures: the rejection says how long to wait.
    breaker.reset();
    fail_twice(&mut svc, &mut handle).await;
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_millis(400)).await;
    for _ in 0..3 {
        let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
        assert_eq!(open_of(&err).retry_after, Some(Duration::from_millis(600)));
    }
    assert!(handle.poll_request().is_pending(), "the mock saw a request");
    let m = breaker.metrics();
    assert_eq!((m.allowed, m.blocked), (2, 4));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_untouched() {
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);

    let fut = svc.ready().await.unwrap().call("req");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(Boom(7));
    let err = fut.await.unwrap_err();
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(7)));
    assert_eq!(err.to_string(), "boom 7");
    assert_eq!(breaker.metrics().failures, 1, "AllErrors counts every Err");

    // A readiness error passes through too, and is no outcome.
    handle.send_error(Boom(8));
    let err = svc.ready().await.unwrap_err();
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(8)));
    let m = breaker.metrics();
    assert_eq!((m.requests, m.failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn server_errors_open_the_breaker_through_the_classifier() {
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpStatus)
        .layer(inner);

    // Success statuses, a 404 included, keep it closed.
    for code in [200, 404, 204] {
        let res = exchange(&mut svc, &mut handle, status(code)).await.unwrap();
        assert_eq!(res.status(), code);
    }
    assert_eq!(breaker.metrics().successes, 3);
    assert_eq!(breaker.state(), CircuitState::Closed);

    // A 503 is returned as the response it is, and counted as a failure.
    let res = exchange(&mut svc, &mut handle, status(503)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "1 of the last 2 failed"
    );
    let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, Some(Duration::from_secs(1)));

    // 429 and 408 count as failures too.
    breaker.reset();
    for code in [429, 408] {
        exchange(&mut svc, &mut handle, status(code)).await.unwrap();
    }
    assert_eq!(breaker.metrics().failures, 3);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_closure_classifier_can_ignore_results() {
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let ignore_4xx = |r: &Result<Response, BoxError>| match r {
        Ok(res) if res.status().is_client_error() => Verdict::Ignore,
        other => HttpStatus.classify(other),
    };
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(ignore_4xx)
        .layer(inner);
    for code in [400, 404, 500] {
        exchange(&mut svc, &mut handle, status(code)).await.unwrap();
    }
    let m = breaker.metrics();
    assert_eq!((m.ignored, m.failures, m.window_len), (2, 1, 1));
    assert_eq!(breaker.state(), CircuitState::Closed, "one outcome of two");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_records_nothing_and_frees_its_probe_slot() {
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpStatus)
        .layer(inner);
    exchange(&mut svc, &mut handle, status(500)).await.unwrap();
    exchange(&mut svc, &mut handle, status(500)).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);

    // The only probe slot is taken: the next request is refused.
    let probe = svc.ready().await.unwrap().call("req");
    let (_, send) = handle.next_request().await.unwrap();
    let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, None, "all probe slots busy");

    // Cancel the probe: nothing recorded, the slot is free again.
    let before = breaker.metrics();
    drop(probe);
    drop(send);
    let after = breaker.metrics();
    assert_eq!(after.cancelled, before.cancelled + 1);
    assert_eq!(after.failures, before.failures);
    assert_eq!(after.successes, before.successes);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);

    let res = exchange(&mut svc, &mut handle, status(200)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_close_the_breaker_or_reopen_it() {
    let breaker = breaker(2);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpStatus)
        .layer(inner);
    exchange(&mut svc, &mut handle, status(502)).await.unwrap();
    exchange(&mut svc, &mut handle, status(502)).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);

    // A failed probe reopens it, for longer (backoff x2).
    tokio::time::advance(Duration::from_secs(1)).await;
    exchange(&mut svc, &mut handle, status(503)).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, Some(Duration::from_secs(2)));

    // Two successful probes close it.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    exchange(&mut svc, &mut handle, status(200)).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    exchange(&mut svc, &mut handle, status(200)).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().half_open_tests, 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_time_limit_fails_with_call_timeout() {
    let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 1,
        call_timeout_ms: Some(250),
        ..Default::default()
    }));
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);

    let fut = svc.ready().await.unwrap().call("req");
    let (_, _send) = handle.next_request().await.unwrap();
    // Paused time: the runtime jumps to the deadline while the mock hangs.
    let err = fut.await.unwrap_err();
    let timeout = err.downcast_ref::<CallTimeout>().expect("a timeout");
    assert_eq!(timeout.limit, Duration::from_millis(250));
    assert_eq!(breaker.metrics().failures, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test]
async fn a_panicking_inner_future_counts_as_a_failure() {
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;

    let breaker = breaker(1);
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(tower::service_fn(
        |fail: bool| async move {
            assert!(!fail, "inner service panicked on purpose");
            Ok::<_, Boom>(())
        },
    ));
    // A tokio task drops the future while the panic unwinds.
    let joined = tokio::spawn(svc.clone().oneshot(true)).await;
    assert!(joined.unwrap_err().is_panic());
    let m = breaker.metrics();
    assert_eq!((m.failures, m.cancelled), (1, 0));

    // `catch_unwind` drops it only after: the layer's guard has recorded it.
    let caught = AssertUnwindSafe(svc.oneshot(true)).catch_unwind().await;
    assert!(caught.is_err());
    let m = breaker.metrics();
    assert_eq!((m.failures, m.cancelled), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn per_key_breakers_are_independent() {
    let breakers = Arc::new(PerEndpointCircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 2,
        open_timeout_ms: 1_000,
        jitter_ratio: 0.0,
        half_open_max_requests: 1,
        ..Default::default()
    }));
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    // The request is its own key here; a real one would be a host or a route.
    let mut svc = PerKeyCircuitBreakerLayer::new(breakers.clone(), |req: &&'static str| *req)
        .classify(HttpStatus)
        .layer(inner);
    // "down" fails twice and opens; "up" goes on.
    for (req, code) in [("down", 500), ("up", 200), ("down", 503), ("up", 200)] {
        let fut = svc.ready().await.unwrap().call(req);
        let (seen, reply) = handle.next_request().await.unwrap();
        assert_eq!(seen, req);
        reply.send_response(status(code));
        assert_eq!(fut.await.unwrap().status(), code);
    }
    assert_eq!(breakers.get_or_create("down").state(), CircuitState::Open);
    assert_eq!(breakers.get_or_create("up").state(), CircuitState::Closed);

    // "down" is refused without reaching the mock; "up" still reaches it.
    let err = svc.ready().await.unwrap().call("down").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, Some(Duration::from_secs(1)));
    assert!(handle.poll_request().is_pending(), "the mock saw a request");
    let fut = svc.ready().await.unwrap().call("up");
    let (seen, reply) = handle.next_request().await.unwrap();
    assert_eq!(seen, "up");
    reply.send_response(status(200));
    fut.await.unwrap();

    // And "down" recovers on its own.
    tokio::time::advance(Duration::from_secs(1)).await;
    let fut = svc.ready().await.unwrap().call("down");
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(200));
    fut.await.unwrap();
    assert_eq!(breakers.get_or_create("down").state(), CircuitState::Closed);
    assert_eq!(
        breakers.get_all_states(),
        vec![
            ("down".to_owned(), CircuitState::Closed),
            ("up".to_owned(), CircuitState::Closed)
        ]
    );
}

/// Regression: the per-key service dropped the registry's handle to the
/// breaker once the request was sent, so the registry could evict the
/// breaker while the request was in flight and its outcome went to an
/// orphan.
#[tokio::test(start_paused = true)]
async fn a_per_key_request_in_flight_keeps_its_breaker_in_the_registry() {
    use breakwater::RegistryLimits;
    let breakers = Arc::new(PerEndpointCircuitBreaker::with_limits(
        CircuitBreakerConfig::default(),
        RegistryLimits {
            idle_ttl: Duration::from_secs(60),
            ..Default::default()
        },
    ));
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = PerKeyCircuitBreakerLayer::new(breakers.clone(), |req: &&'static str| *req)
        .classify(HttpStatus)
        .layer(inner);
    let fut = svc.ready().await.unwrap().call("slow");
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_secs(3_600)).await;
    assert_eq!(breakers.evict_idle(), 0, "the request is still running");
    reply.send_response(status(503));
    assert_eq!(fut.await.unwrap().status(), 503);
    let stats = breakers.statistics_for("slow").expect("still retained");
    assert_eq!(
        stats.metrics.failures, 1,
        "the outcome reached the registry's breaker"
    );
    // Done: now it may go once idle.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(breakers.evict_idle(), 1);
}

/// Regression: `poll_ready` always waited for the inner service, so in
/// front of an inner service that is never ready an Open breaker never
/// answered at all.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_fast_even_when_the_inner_service_is_not_ready() {
    use futures_util::FutureExt;
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    handle.allow(0); // never ready
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);
    assert!(
        svc.ready().now_or_never().is_none(),
        "Closed: waits for the inner service"
    );

    breaker.try_acquire().unwrap().failure();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), CircuitState::Open);
    let ready = svc.ready().now_or_never().expect("ready at once").unwrap();
    let err = ready.call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, Some(Duration::from_secs(1)));
    assert!(handle.poll_request().is_pending(), "the mock saw a request");
    assert_eq!(breaker.metrics().blocked, 1);

    // Made ready while Open, called after the deadline: the inner service
    // was not made ready, so the call is still a rejection, advising no
    // further wait.
    svc.ready().now_or_never().expect("ready at once").unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = svc.call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, Some(Duration::ZERO));
    assert!(handle.poll_request().is_pending(), "the mock saw a request");
    assert_eq!(breaker.metrics().blocked, 2);
    // Polled again now, it waits for the inner service (a probe needs it).
    assert!(svc.ready().now_or_never().is_none());
    breaker.try_acquire().unwrap().failure(); // the probe fails: Open again

    // Forced open too; and after the opening the inner service is waited
    // for again (a probe needs it).
    breaker.force_open();
    let err = svc.ready().await.unwrap().call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, None);
    breaker.reset();
    assert!(svc.ready().now_or_never().is_none());
    handle.allow(1);
    let fut = svc.ready().await.unwrap().call("req");
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(status(200));
    fut.await.unwrap();
    assert_eq!(breaker.metrics().blocked, 3);
}

#[test]
fn public_types_are_send_and_sync() {
    type Inner = mock::Mock<&'static str, Response>;
    send_sync::<CircuitBreakerLayer>();
    send_sync::<CircuitBreakerLayer<HttpStatus>>();
    send_sync::<CircuitBreakerService<tower::util::BoxCloneSyncService<(), (), BoxError>>>();
    send::<CircuitBreakerService<Inner, AllErrors>>();
    send::<ResponseFuture<<Inner as Service<&'static str>>::Future, HttpStatus>>();
    send_sync::<PerKeyCircuitBreakerLayer<fn(&()) -> String, HttpStatus>>();
    send_sync::<CircuitOpen>();
    send_sync::<CallTimeout>();
}

/// End to end, client side: a `service_fn` that sends the request with
/// hyper-util's client is wrapped by the layer, as a caller guarding a
/// downstream would do. (Server side, see
/// `an_axum_route_answers_503_with_retry_after_through_handle_error`.)
///
/// Real sockets need real time; no state change is waited for by sleeping:
/// requests drive every change, and the one pause is the `retry_after` the
/// breaker advised.
#[tokio::test]
async fn a_real_server_failing_then_recovering_through_the_layer() {
    use axum::body::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    // The server: 500 while `failing`, then 200 "ok"; counts what it serves.
    #[derive(Clone, Default)]
    struct Downstream {
        failing: Arc<AtomicBool>,
        hits: Arc<AtomicUsize>,
    }
    let downstream = Downstream::default();
    downstream.failing.store(true, Ordering::SeqCst);
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(
                |axum::extract::State(d): axum::extract::State<Downstream>| async move {
                    d.hits.fetch_add(1, Ordering::SeqCst);
                    if d.failing.load(Ordering::SeqCst) {
                        (http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                    } else {
                        (http::StatusCode::OK, "ok")
                    }
                },
            ),
        )
        .with_state(downstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // The client, guarded.
    let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 4,
        failure_threshold: 0.5,
        open_timeout_ms: 300,
        jitter_ratio: 0.0,
        half_open_max_requests: 2,
        ..Default::default()
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let http = tower::service_fn(move |uri: http::Uri| {
        let client = client.clone();
        async move { client.get(uri).await }
    });
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpStatus)
        .layer(http);
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();

    // Four 500s: returned as responses, counted as failures; the breaker opens.
    for i in 0..4 {
        assert_eq!(breaker.state(), CircuitState::Closed, "request {i}");
        let res = svc.ready().await.unwrap().call(uri.clone()).await.unwrap();
        assert_eq!(res.status(), 500);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(downstream.hits.load(Ordering::SeqCst), 4);

    // Open: refused at once, the server sees nothing.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(uri.clone())
        .await
        .unwrap_err();
    let retry_after = open_of(&err)
        .retry_after
        .expect("an opening with a deadline");
    assert!(retry_after <= Duration::from_millis(300), "{retry_after:?}");
    assert_eq!(downstream.hits.load(Ordering::SeqCst), 4);

    // The server recovers; after the advised wait, two probes close the breaker.
    downstream.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(retry_after).await;
    for expected in [CircuitState::HalfOpen, CircuitState::Closed] {
        let res = svc.ready().await.unwrap().call(uri.clone()).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(breaker.state(), expected);
    }
    assert_eq!(downstream.hits.load(Ordering::SeqCst), 6);
    let m = breaker.metrics();
    assert_eq!((m.failures, m.blocked, m.half_open_tests), (4, 1, 2));

    // Stop the server: drop the client's pooled connections, then shut down.
    drop(svc);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Server side with axum: `HandleErrorLayer::new(handle_error)` in front of
/// the breaker makes the stack infallible, as `Router::route_layer` needs,
/// and turns a rejection and a call timeout into `503`s.
#[tokio::test(start_paused = true)]
async fn an_axum_route_answers_503_with_retry_after_through_handle_error() {
    use axum::error_handling::HandleErrorLayer;
    use breakwater::layer::handle_error;
    use tower::ServiceBuilder;

    let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
        sample_size: 2,
        open_timeout_ms: 30_000,
        jitter_ratio: 0.0,
        call_timeout_ms: Some(100),
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(CircuitBreakerLayer::new(breaker.clone())),
        );
    let get = |path: &str| {
        http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let res = app.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 200);

    // A call past `call_timeout_ms`: 503, no Retry-After (the breaker is
    // still Closed).
    let res = app.clone().oneshot(get("/slow")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get(http::header::RETRY_AFTER).is_none());

    // A second timeout opens the breaker; the next request is refused with
    // the time left, in whole seconds.
    let _ = app.clone().oneshot(get("/slow")).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    let res = app.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "30");
}

/// A `reqwest::Client` is a tower service whose response is not an
/// `http::Response`; `HttpStatus` classifies it all the same.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_reqwest_client_behind_the_layer_is_classified_by_status() {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "busy") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let breaker = breaker(1);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classify(HttpStatus)
        .layer(client.clone());
    for _ in 0..2 {
        let req = client.get(format!("http://{addr}/")).build().unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.metrics().failures, 2);
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn a_call_made_after_the_open_timeout_is_admitted_though_poll_ready_found_it_open() {
    let breaker = breaker(1);
    let (inner, mut handle) = mock::pair::<&'static str, Response>();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);
    fail_twice(&mut svc, &mut handle).await;
    assert_eq!(breaker.state(), CircuitState::Open);
    // Made ready while Open; the open timeout runs out before the call.
    svc.ready().await.unwrap();
    tokio::time::advance(Duration::from_millis(1_500)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let fut = svc.call("probe");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "probe");
    send.send_response(status(200));
    fut.await.unwrap();
    assert_eq!(breaker.metrics().half_open_tests, 1);

    // An inner service that is not ready while the breaker refuses: the
    // call is still a rejection, and the inner service is never called.
    breaker.force_open();
    handle.allow(0);
    svc.ready().await.unwrap();
    breaker.reset();
    let err = svc.call("req").await.unwrap_err();
    assert_eq!(open_of(&err).retry_after, Some(Duration::ZERO));
    assert!(handle.poll_request().is_pending(), "the mock saw a request");
}
