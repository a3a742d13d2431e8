//! `EmailExecutor` against a tiny SMTP sink on 127.0.0.1 that this test
//! starts: what it receives, and how SMTP replies are classified.
#![cfg(feature = "webhook")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::traits::{
    ActionConfig, ActionExecutor, EmailAction, EntityEvent, Error, EventKind,
};
use breakwater::webhook::{EmailExecutor, Executors, SmtpTls, WebhookExecutor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as the sink got it.
#[derive(Debug, Clone, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

/// A minimal SMTP server: greets, accepts EHLO/HELO, MAIL, RCPT (answering
/// `rcpt_reply`), DATA, RSET, NOOP and QUIT, and records each message.
struct Sink {
    mails: Arc<Mutex<Vec<Mail>>>,
    addr: SocketAddr,
}

impl Sink {
    async fn start(rcpt_reply: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(socket, rcpt_reply, store).await;
                });
            }
        });
        Self { mails, addr }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    rcpt_reply: &str,
    store: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut mail = Mail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &str = match verb.as_str() {
            "EHLO" | "HELO" => "250 sink.test\r\n",
            "MAIL" => {
                mail.from = command.clone();
                "250 ok\r\n"
            }
            "RCPT" => {
                if rcpt_reply.starts_with('2') {
                    mail.to.push(command.clone());
                }
                rcpt_reply
            }
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                mail.data = data;
                store.lock().unwrap().push(std::mem::take(&mut mail));
                "250 queued as 1\r\n"
            }
            "RSET" => {
                mail = Mail::default();
                "250 ok\r\n"
            }
            "NOOP" => "250 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 unknown command\r\n",
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

fn executor(addr: SocketAddr) -> EmailExecutor {
    EmailExecutor::builder("127.0.0.1", "Alerts <alerts@example.com>")
        .port(addr.port())
        .tls(SmtpTls::None)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn event() -> EntityEvent {
    EntityEvent::new(
        EventKind::Insert,
        "order",
        uuid::Uuid::new_v4(),
        serde_json::json!({"total": 42, "customer": {"name": "Ada"}}),
    )
}

fn email(to: &[&str]) -> ActionConfig {
    ActionConfig::Email(EmailAction {
        to: to.iter().map(|s| s.to_string()).collect(),
        subject: "New {{ entity_type }}: {{ data.total }}".into(),
        body_template: "{{ data.customer.name }} ordered for {{ data.total }}.".into(),
    })
}

#[tokio::test]
async fn delivers_the_rendered_message_to_every_recipient() {
    let sink = Sink::start("250 ok\r\n").await;
    let result = executor(sink.addr)
        .execute(
            &event(),
            &email(&["ops@example.com", "Bo <bo@example.org>"]),
        )
        .await
        .unwrap();
    assert!(result.success);
    assert_eq!(result.action_type, "email");
    assert!(result.message.starts_with("SMTP 250"), "{}", result.message);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.from.contains("<alerts@example.com>"), "{}", mail.from);
    assert_eq!(mail.to.len(), 2);
    assert!(mail.to[0].contains("<ops@example.com>"), "{:?}", mail.to);
    assert!(mail.to[1].contains("<bo@example.org>"), "{:?}", mail.to);
    assert!(
        mail.data.contains("Subject: New order: 42\r\n"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("Ada ordered for 42."), "{}", mail.data);
}

#[tokio::test]
async fn smtp_replies_and_transport_errors_are_classified() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                // Accepts and never greets.
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        addr
    };
    let rejects = Sink::start("550 no such user\r\n").await;
    let busy = Sink::start("451 try again later\r\n").await;

    let err = executor(rejects.addr)
        .execute(&event(), &email(&["nobody@example.com"]))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "550: {err}");
    let err = executor(busy.addr)
        .execute(&event(), &email(&["ops@example.com"]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "451: {err}");
    let err = executor(refused)
        .execute(&event(), &email(&["ops@example.com"]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "refused: {err}");
    let short = EmailExecutor::builder("127.0.0.1", "alerts@example.com")
        .port(silent.port())
        .tls(SmtpTls::None)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short
        .execute(&event(), &email(&["ops@example.com"]))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Timeout(Duration::from_millis(300)), "{err}");
    assert!(rejects.mails().is_empty() && busy.mails().is_empty());
}

#[tokio::test]
async fn executors_send_email_actions_through_the_email_executor() {
    let sink = Sink::start("250 ok\r\n").await;
    let all = Executors::new(WebhookExecutor::new().unwrap()).with_email(executor(sink.addr));
    all.execute(&event(), &email(&["ops@example.com"]))
        .await
        .unwrap();
    assert_eq!(sink.mails().len(), 1);
    // A bad recipient is refused before anything is sent.
    let bad = ActionConfig::Email(EmailAction {
        to: vec!["not an address".into()],
        subject: "s".into(),
        body_template: "b".into(),
    });
    match all.execute(&event(), &bad).await {
        Err(Error::InvalidAction(e)) => assert_eq!(e.field, "email.to"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.mails().len(), 1);
}
