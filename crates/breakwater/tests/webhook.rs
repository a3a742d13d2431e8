//! `WebhookExecutor` and `SlackExecutor` against real receivers on
//! 127.0.0.1: axum for HTTP answers, raw TCP for broken transports. Every
//! signed request a receiver gets is verified with an independent
//! implementation (the `standardwebhooks` crate).
#![cfg(feature = "webhook")]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Router;
use breakwater::traits::{
    ActionConfig, ActionExecutor, CircuitBreakerActionExecutor, EntityEvent, Error, EventKind,
    SlackAction, WebhookAction,
};
use breakwater::webhook::{Executors, SlackExecutor, WebhookExecutor};
use breakwater::{CircuitState, PerEndpointCircuitBreaker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// How the receiver answers the next request.
#[derive(Debug, Clone)]
enum Reply {
    /// A status, extra headers and a body.
    With(u16, Vec<(&'static str, String)>, String),
    /// A status and a body that never ends.
    Endless(u16),
}

fn status(code: u16) -> Reply {
    Reply::With(code, vec![], String::new())
}

#[derive(Default)]
struct ReceiverState {
    seen: Vec<Seen>,
    replies: VecDeque<Reply>,
    /// Verification results of the signed requests, by the reference crate.
    verified: Vec<Result<(), String>>,
}

/// An axum receiver on 127.0.0.1 that records what it gets, verifies every
/// signed request, and answers from a script (then `200 ok`).
#[derive(Clone, Default)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(replies: impl IntoIterator<Item = Reply>) -> (Self, SocketAddr) {
        let receiver = Self::default();
        receiver.state.lock().unwrap().replies = replies.into_iter().collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Every signed request verified, and `n` of them were signed.
    fn assert_verified(&self, n: usize) {
        let state = self.state.lock().unwrap();
        assert_eq!(state.verified.len(), n, "signed requests");
        for (i, v) in state.verified.iter().enumerate() {
            assert_eq!(v, &Ok(()), "request {i} failed verification");
        }
    }
}

async fn handle(
    State(receiver): State<Receiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut state = receiver.state.lock().unwrap();
        if headers.contains_key("webhook-signature") {
            let check = standardwebhooks::Webhook::new(SECRET)
                .and_then(|w| w.verify(&body, &headers))
                .map_err(|e| e.to_string());
            state.verified.push(check);
        }
        state.seen.push(Seen {
            method,
            path: uri.to_string(),
            headers,
            body,
        });
        state
            .replies
            .pop_front()
            .unwrap_or(Reply::With(200, vec![], "ok".into()))
    };
    match reply {
        Reply::With(code, headers, body) => {
            let mut response = Response::builder().status(code);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Endless(code) => {
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, Infallible>(Bytes::from(vec![b'x'; 64 * 1024]))
            });
            Response::builder()
                .status(code)
                .body(Body::from_stream(chunks))
                .unwrap()
        }
    }
}

fn event() -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "order",
        uuid::Uuid::new_v4(),
        serde_json::json!({"total": 42, "customer": {"name": "Ada"}}),
    )
}

fn hook(addr: SocketAddr, path: &str) -> WebhookAction {
    WebhookAction {
        url: format!("http://{addr}{path}"),
        method: "POST".into(),
        headers: BTreeMap::new(),
        body_template: None,
        signing_secret: None,
    }
}

fn signed(addr: SocketAddr, path: &str) -> WebhookAction {
    WebhookAction {
        signing_secret: Some(SECRET.into()),
        ..hook(addr, path)
    }
}

fn executor() -> WebhookExecutor {
    WebhookExecutor::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .max_response_bytes(1024)
        .max_retry_after(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test]
async fn posts_the_event_as_json_by_default() {
    let (receiver, addr) = Receiver::start([]).await;
    let e = event();
    let result = executor()
        .execute(&e, &ActionConfig::Webhook(hook(addr, "/hooks/orders?x=1")))
        .await
        .unwrap();
    assert!(result.success);
    assert_eq!(result.status_code, Some(200));
    assert_eq!(result.action_type, "webhook");
    assert_eq!(result.message, "HTTP 200 OK: ok");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/hooks/orders?x=1");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(
        seen[0].headers["user-agent"],
        concat!("breakwater/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        seen[0].headers["content-length"],
        &seen[0].body.len().to_string()[..]
    );
    let body: EntityEvent = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body, e);
    assert!(!seen[0].headers.contains_key("webhook-signature"));
}

#[tokio::test]
async fn method_headers_and_body_template_come_from_the_action() {
    let (receiver, addr) = Receiver::start([]).await;
    let mut action = hook(addr, "/put");
    action.method = "put".into();
    action.headers = BTreeMap::from([
        ("X-Team".into(), "billing".into()),
        ("Content-Type".into(), "text/plain".into()),
    ]);
    action.body_template = Some(
        "{{ event_type }} {{ entity_type }} {{ data.customer.name }} [{{ data.missing }}]".into(),
    );
    executor()
        .execute(&event(), &ActionConfig::Webhook(action))
        .await
        .unwrap();
    let seen = &receiver.seen()[0];
    assert_eq!(seen.method, Method::PUT);
    assert_eq!(seen.headers["x-team"], "billing");
    assert_eq!(seen.headers["content-type"], "text/plain");
    assert_eq!(&seen.body[..], b"INSERT order Ada []");
}

#[tokio::test]
async fn signed_requests_verify_with_the_reference_implementation() {
    let (receiver, addr) = Receiver::start([status(503), status(503)]).await;
    let e = event();
    let action = signed(addr, "/signed");
    let exec = executor();
    // Three attempts of one action: two fail, the third is delivered.
    for _ in 0..2 {
        let err = exec
            .execute(&e, &ActionConfig::Webhook(action.clone()))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    exec.execute(&e, &ActionConfig::Webhook(action.clone()))
        .await
        .unwrap();
    receiver.assert_verified(3);
    let seen = receiver.seen();
    let ids: Vec<_> = seen
        .iter()
        .map(|s| s.headers["webhook-id"].clone())
        .collect();
    let want = WebhookExecutor::message_id(&e, &action);
    assert!(
        ids.iter().all(|id| id == &want[..]),
        "one id across retries: {ids:?}"
    );
    // A restart: a new executor derives the same id.
    executor()
        .execute(&e, &ActionConfig::Webhook(action.clone()))
        .await
        .unwrap();
    assert_eq!(receiver.seen()[3].headers["webhook-id"], &want[..]);
    // Timestamps are this attempt's Unix seconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for s in receiver.seen() {
        let ts: i64 = s.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((now - ts).abs() <= 60, "timestamp {ts} vs now {now}");
    }
    receiver.assert_verified(4);
}

#[tokio::test]
async fn a_caller_can_give_its_own_message_id() {
    let (receiver, addr) = Receiver::start([]).await;
    let mut action = signed(addr, "/own-id");
    action.body_template = Some(r#"{"order": {{ data.total }}}"#.into());
    executor()
        .execute_with_id(&event(), &action, "msg_delivery_17")
        .await
        .unwrap();
    receiver.assert_verified(1);
    let seen = &receiver.seen()[0];
    assert_eq!(seen.headers["webhook-id"], "msg_delivery_17");
    assert_eq!(&seen.body[..], br#"{"order": 42}"#);

    // An id that cannot be a header value is the caller's mistake: refused
    // for good, and nothing is sent.
    let refused = executor()
        .execute_with_id(&event(), &action, "msg_1\r\nx-injected: 1")
        .await
        .unwrap_err();
    assert!(refused.is_permanent(), "{refused:?}");
    assert!(refused.to_string().contains("message id"), "{refused}");
    assert_eq!(receiver.seen().len(), 1);
}

/// An executor keeps what it parsed of an action (URL, headers, template,
/// key) for the next request of the same action; any change to the action
/// is sent as it is now, and the event is rendered anew every time.
#[tokio::test]
async fn one_executor_sends_each_action_as_it_is_now() {
    let (receiver, addr) = Receiver::start([]).await;
    let exec = executor();
    let mut action = signed(addr, "/v1");
    action.body_template = Some("{{ entity_type }} {{ data.total }}".into());
    let send = |action: WebhookAction, event: EntityEvent| {
        let exec = exec.clone();
        async move {
            exec.execute(&event, &ActionConfig::Webhook(action))
                .await
                .unwrap()
        }
    };
    let mut first = event();
    send(action.clone(), first.clone()).await;
    first.data = serde_json::json!({"total": 7});
    send(action.clone(), first.clone()).await;
    let mut changed = action.clone();
    changed.url = format!("http://{addr}/v2");
    changed.method = "PUT".into();
    changed.headers = BTreeMap::from([("X-Team".into(), "billing".into())]);
    changed.body_template = Some("{{ event_type }}".into());
    send(changed.clone(), first.clone()).await;
    changed.signing_secret = None;
    send(changed, first.clone()).await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(&seen[0].body[..], b"order 42");
    assert_eq!(
        &seen[1].body[..],
        b"order 7",
        "the template is rendered per event"
    );
    assert_eq!((seen[2].method.as_str(), &seen[2].path[..]), ("PUT", "/v2"));
    assert_eq!(seen[2].headers["x-team"], "billing");
    assert_eq!(&seen[2].body[..], b"INSERT");
    assert!(!seen[1].headers.contains_key("x-team"));
    assert_ne!(
        seen[0].headers["webhook-id"], seen[2].headers["webhook-id"],
        "another action, another id"
    );
    assert!(
        !seen[3].headers.contains_key("webhook-signature"),
        "the secret was removed"
    );
    receiver.assert_verified(3);

    // An action that fails its checks fails every time, without a request.
    let mut bad = hook(addr, "/bad");
    bad.body_template = Some("{{ unclosed".into());
    for _ in 0..2 {
        let err = exec
            .execute(&first, &ActionConfig::Webhook(bad.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("webhook.body_template"), "{err}");
    }
    assert_eq!(receiver.seen().len(), 4);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (receiver, addr) = Receiver::start([Reply::With(
        302,
        vec![("location", "/elsewhere".into())],
        String::new(),
    )])
    .await;
    let err = executor()
        .execute(&event(), &ActionConfig::Webhook(signed(addr, "/moved")))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.status(), Some(302));
    assert_eq!(
        receiver.seen().len(),
        1,
        "the redirect target was never called"
    );
}

#[tokio::test]
async fn response_bodies_are_read_only_up_to_the_cap() {
    // An endless body: an executor that read it all would never finish.
    let (_receiver, addr) = Receiver::start([Reply::Endless(500), Reply::Endless(200)]).await;
    let exec = executor();
    let err = exec
        .execute(&event(), &ActionConfig::Webhook(hook(addr, "/big")))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.status(), Some(500));
    assert!(
        err.to_string().len() < 300,
        "the message quotes a short start: {err}"
    );
    let ok = exec
        .execute(&event(), &ActionConfig::Webhook(hook(addr, "/big")))
        .await
        .unwrap();
    assert_eq!(ok.status_code, Some(200));
}

/// What one answer came to, for the table.
#[derive(Debug, PartialEq)]
enum Kind {
    Delivered,
    Transient(Option<Duration>),
    Permanent,
    Gone,
    Timeout(Duration),
}

fn kind(result: breakwater::traits::Result<breakwater::traits::ActionResult>) -> Kind {
    match result {
        Ok(r) => {
            assert!(r.success);
            Kind::Delivered
        }
        Err(e @ Error::Timeout(limit)) => {
            assert!(e.is_transient());
            Kind::Timeout(limit)
        }
        Err(e) if e.is_gone() => {
            assert!(!e.is_transient() && !e.is_permanent());
            Kind::Gone
        }
        Err(e) if e.is_transient() => Kind::Transient(e.retry_after()),
        Err(e) if e.is_permanent() => Kind::Permanent,
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// A TCP server on 127.0.0.1 that reads one request and then does `then`
/// with the connection.
async fn raw_server<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let then = Arc::new(then);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let then = then.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                then(socket).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn every_status_class_and_loopback_transport_error_is_classified() {
    let far_future = "Thu, 01 Jan 2099 00:00:00 GMT".to_string();
    let cases: Vec<(Reply, Kind)> = vec![
        (status(200), Kind::Delivered),
        (status(201), Kind::Delivered),
        (status(202), Kind::Delivered),
        (status(204), Kind::Delivered),
        (status(301), Kind::Permanent),
        (status(302), Kind::Permanent),
        (status(304), Kind::Permanent),
        (status(307), Kind::Permanent),
        (status(308), Kind::Permanent),
        (status(400), Kind::Permanent),
        (status(401), Kind::Permanent),
        (status(403), Kind::Permanent),
        (status(404), Kind::Permanent),
        (status(405), Kind::Permanent),
        (status(408), Kind::Transient(None)),
        (status(409), Kind::Permanent),
        (status(410), Kind::Gone),
        (status(413), Kind::Permanent),
        (status(422), Kind::Permanent),
        (status(429), Kind::Transient(None)),
        (
            Reply::With(429, vec![("retry-after", "7".into())], String::new()),
            Kind::Transient(Some(Duration::from_secs(7))),
        ),
        (
            Reply::With(
                503,
                vec![("retry-after", far_future.clone())],
                String::new(),
            ),
            Kind::Transient(Some(Duration::from_secs(60))),
        ),
        (
            Reply::With(503, vec![("retry-after", "3600".into())], String::new()),
            Kind::Transient(Some(Duration::from_secs(60))),
        ),
        (
            Reply::With(500, vec![("retry-after", "7".into())], String::new()),
            Kind::Transient(None),
        ),
        (status(500), Kind::Transient(None)),
        (status(501), Kind::Transient(None)),
        (status(502), Kind::Transient(None)),
        (status(503), Kind::Transient(None)),
        (status(504), Kind::Transient(None)),
        (status(599), Kind::Transient(None)),
    ];
    let (replies, want): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let codes: Vec<u16> = replies
        .iter()
        .map(|r| match r {
            Reply::With(c, ..) | Reply::Endless(c) => *c,
        })
        .collect();
    let (receiver, addr) = Receiver::start(replies).await;
    let exec = executor();
    for (i, want) in want.into_iter().enumerate() {
        let got = kind(
            exec.execute(&event(), &ActionConfig::Webhook(signed(addr, "/table")))
                .await,
        );
        assert_eq!(got, want, "status {}", codes[i]);
    }
    receiver.assert_verified(codes.len());

    // Transport errors that loopback can produce.
    let short = WebhookExecutor::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = raw_server(|socket| async move {
        // Holds the connection open, never answers.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    })
    .await;
    let hangs_up = raw_server(|socket| async move { drop(socket) }).await;
    let cut_off = raw_server(|mut socket| async move {
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
            .await;
        drop(socket);
    })
    .await;
    // Answers, then stalls in the middle of the body: the total timeout
    // covers the read of the answer too.
    let stalls = |head: &'static [u8]| {
        raw_server(move |mut socket| async move {
            let _ = socket.write_all(head).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        })
    };
    let stalls_2xx = stalls(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart").await;
    let stalls_503 = stalls(
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 100\r\n\r\npart",
    )
    .await;
    let (_plain, plain) = Receiver::start([]).await;
    let transport: Vec<(&str, String, Kind)> = vec![
        (
            "refused",
            format!("http://{refused}/"),
            Kind::Transient(None),
        ),
        (
            "never answers",
            format!("http://{silent}/"),
            Kind::Timeout(Duration::from_millis(300)),
        ),
        (
            "closes before answering",
            format!("http://{hangs_up}/"),
            Kind::Transient(None),
        ),
        (
            "closes mid-response",
            format!("http://{cut_off}/"),
            Kind::Transient(None),
        ),
        (
            "a 2xx whose body stalls",
            format!("http://{stalls_2xx}/"),
            Kind::Timeout(Duration::from_millis(300)),
        ),
        (
            "a 503 whose body stalls: the status decides",
            format!("http://{stalls_503}/"),
            Kind::Transient(Some(Duration::from_secs(7))),
        ),
        (
            "TLS to a plain HTTP server",
            format!("https://{plain}/"),
            Kind::Transient(None),
        ),
    ];
    for (name, url, want) in transport {
        let action = WebhookAction {
            url,
            ..signed(addr, "/")
        };
        let got = kind(
            short
                .execute(&event(), &ActionConfig::Webhook(action))
                .await,
        );
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test]
async fn invalid_actions_are_refused_without_a_request() {
    let (receiver, addr) = Receiver::start([]).await;
    let mut bad_header = hook(addr, "/");
    bad_header.headers.insert("X-Bad".into(), "a\x01b".into());
    let mut bad_secret = hook(addr, "/");
    bad_secret.signing_secret = Some("whsec_c2hvcnQ=".into());
    let mut bad_template = hook(addr, "/");
    bad_template.body_template = Some("{{ oops".into());
    for (action, field) in [
        (bad_header, "webhook.headers"),
        (bad_secret, "webhook.signing_secret"),
        (bad_template, "webhook.body_template"),
        (
            WebhookAction {
                url: "ftp://127.0.0.1/".into(),
                ..hook(addr, "/")
            },
            "webhook.url",
        ),
    ] {
        match executor()
            .execute(&event(), &ActionConfig::Webhook(action))
            .await
        {
            Err(Error::InvalidAction(e)) => assert_eq!(e.field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(receiver.seen().is_empty());
}

#[tokio::test]
async fn slack_messages_carry_text_and_channel() {
    let (receiver, addr) = Receiver::start([]).await;
    let slack = SlackExecutor::from_webhook(executor());
    let e = event();
    let with_template = ActionConfig::Slack(SlackAction {
        webhook_url: format!("http://{addr}/services/T/B/X"),
        channel: Some("#ops".into()),
        message_template: Some("New {{ entity_type }} from {{ data.customer.name }}".into()),
    });
    let result = slack.execute(&e, &with_template).await.unwrap();
    assert_eq!(result.action_type, "slack");
    let plain = ActionConfig::Slack(SlackAction {
        webhook_url: format!("http://{addr}/services/T/B/X"),
        channel: None,
        message_template: None,
    });
    slack.execute(&e, &plain).await.unwrap();
    let seen = receiver.seen();
    let first: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"text": "New order from Ada", "channel": "#ops"})
    );
    let second: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(
        second,
        serde_json::json!({"text": format!("INSERT order {}", e.entity_id)})
    );
    assert_eq!(seen[0].path, "/services/T/B/X");
    for request in &seen {
        assert_eq!(request.headers["content-type"], "application/json");
    }
    // The webhook executor performs Slack actions too; other kinds are refused.
    executor().execute(&e, &plain).await.unwrap();
    let log = ActionConfig::Log(breakwater::traits::LogAction {
        level: "info".into(),
        message_template: None,
    });
    assert!(slack.execute(&e, &log).await.unwrap_err().is_permanent());
}

#[tokio::test]
async fn executors_route_each_action_type() {
    let (receiver, addr) = Receiver::start([]).await;
    let all: Arc<dyn ActionExecutor> = Arc::new(Executors::new(executor()));
    let e = event();
    let results = [
        ActionConfig::Webhook(signed(addr, "/w")),
        ActionConfig::Slack(SlackAction {
            webhook_url: format!("http://{addr}/s"),
            channel: None,
            message_template: None,
        }),
        ActionConfig::Log(breakwater::traits::LogAction {
            level: "warn".into(),
            message_template: Some("{{ entity_type }} {{ data.total }}".into()),
        }),
    ];
    let mut types = vec![];
    for action in &results {
        types.push(all.execute(&e, action).await.unwrap().action_type);
    }
    assert_eq!(types, ["webhook", "slack", "log"]);
    let paths: Vec<_> = receiver.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/w", "/s"]);
    receiver.assert_verified(1);
    let email = ActionConfig::Email(breakwater::traits::EmailAction {
        to: vec!["a@example.com".into()],
        subject: "s".into(),
        body_template: "b".into(),
    });
    let err = all.execute(&e, &email).await.unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("email"),
        "{err}"
    );
}

#[tokio::test]
async fn behind_breakers_a_dead_endpoint_opens_and_gone_counts_as_nothing() {
    let (_receiver, addr) = Receiver::start((0..4).map(|_| status(410))).await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let breakers = Arc::new(PerEndpointCircuitBreaker::new(
        breakwater::CircuitBreakerConfig {
            sample_size: 4,
            open_timeout_ms: 60_000,
            ..Default::default()
        },
    ));
    let exec = CircuitBreakerActionExecutor::per_endpoint(executor(), breakers.clone());
    for _ in 0..4 {
        let err = exec
            .execute(&event(), &ActionConfig::Webhook(hook(refused, "/")))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let gone = exec
            .execute(&event(), &ActionConfig::Webhook(hook(addr, "/")))
            .await
            .unwrap_err();
        assert!(gone.is_gone(), "{gone}");
    }
    let open = exec
        .execute(&event(), &ActionConfig::Webhook(hook(refused, "/")))
        .await
        .unwrap_err();
    assert!(open.is_circuit_open(), "{open}");
    let states = breakers.get_all_states();
    let mut want = vec![
        (format!("http://{refused}"), CircuitState::Open),
        (format!("http://{addr}"), CircuitState::Closed),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(states, want, "sorted by endpoint");
}
