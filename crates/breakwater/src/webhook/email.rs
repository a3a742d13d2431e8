//! Email actions over SMTP (lettre, tokio, rustls).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::time::Instant;

use super::{elapsed_ms, not_mine};
use crate::traits::{
    template, ActionConfig, ActionConfigError, ActionExecutor, ActionResult, EntityEvent, Error,
    Result,
};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SmtpTls {
    /// TLS from the first byte (SMTPS), port 465 by default.
    Wrapper,
    /// Plain connection upgraded with STARTTLS, which the server must offer;
    /// port 587 by default.
    StartTls,
    /// No encryption, port 25 by default: only for a relay on the same host
    /// or network (and tests).
    None,
}

/// Performs `email` actions: one plain-text message per action, from the
/// configured sender to the action's recipients, with the rendered `subject`
/// and `body_template`.
///
/// SMTP answers map to [`Error`]: a 4xx reply is transient, a 5xx reply
/// permanent (a refused recipient, a message too large), timeouts are
/// [`Error::Timeout`] (the whole conversation is bounded, not only the
/// connect), connection and TLS failures transient. `Debug` never
/// shows the credentials.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::webhook::{EmailExecutor, SmtpTls};
///
/// let email = EmailExecutor::builder("smtp.example.com", "Alerts <alerts@example.com>")
///     .tls(SmtpTls::StartTls)
///     .credentials("alerts", "hunter2")
///     .timeout(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// assert!(!format!("{email:?}").contains("hunter2"));
/// assert!(EmailExecutor::builder("smtp.example.com", "not an address").build().is_err());
/// ```
#[derive(Clone)]
pub struct EmailExecutor {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    tls: SmtpTls,
    timeout: Duration,
}

impl fmt::Debug for EmailExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailExecutor")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds an [`EmailExecutor`].
#[must_use]
pub struct EmailExecutorBuilder {
    host: String,
    from: String,
    port: Option<u16>,
    tls: SmtpTls,
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl fmt::Debug for EmailExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailExecutorBuilder")
            .field("host", &self.host)
            .field("from", &self.from)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EmailExecutor {
    /// A builder for an executor sending through the SMTP server `host` as
    /// `from` (`alerts@example.com` or `Name <alerts@example.com>`);
    /// implicit TLS ([`SmtpTls::Wrapper`]) unless told otherwise.
    pub fn builder(host: impl Into<String>, from: impl Into<String>) -> EmailExecutorBuilder {
        EmailExecutorBuilder {
            host: host.into(),
            from: from.into(),
            port: None,
            tls: SmtpTls::Wrapper,
            credentials: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl EmailExecutorBuilder {
    /// The server's port, when not the default of the TLS mode.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// How the connection is protected.
    pub fn tls(mut self, tls: SmtpTls) -> Self {
        self.tls = tls;
        self
    }

    /// Log in with these credentials.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Time for the whole SMTP conversation of one message (connect
    /// included); 30 s by default.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// The executor. Nothing is sent or opened yet.
    ///
    /// # Errors
    ///
    /// A permanent [`Error`] when `from` is not an address, the host is
    /// empty, or the TLS settings cannot be built.
    pub fn build(self) -> Result<EmailExecutor> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| Error::permanent(format!("email sender {:?}: {e}", self.from)))?;
        if self.host.trim().is_empty() {
            return Err(Error::permanent("email host must not be empty"));
        }
        let tls_error = |e: lettre::transport::smtp::Error| {
            Error::permanent(format!("email TLS settings for {:?}: {e}", self.host))
        };
        let mut builder = match self.tls {
            SmtpTls::Wrapper => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host).map_err(tls_error)?
            }
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host)
                .map_err(tls_error)?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host),
        };
        let port = self.port.unwrap_or(match self.tls {
            SmtpTls::Wrapper => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        });
        builder = builder.port(port).timeout(Some(self.timeout));
        if let Some((user, password)) = self.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(EmailExecutor {
            transport: builder.build(),
            from,
            host: self.host,
            port,
            tls: self.tls,
            timeout: self.timeout,
        })
    }
}

impl EmailExecutor {
    fn classify(&self, e: &lettre::transport::smtp::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout(self.timeout);
        }
        let message = format!("SMTP: {e}");
        if e.is_permanent() || e.is_client() {
            Error::permanent(message)
        } else {
            // 4xx replies, refused or broken connections, TLS failures.
            Error::transient(message)
        }
    }
}

#[async_trait]
impl ActionExecutor for EmailExecutor {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        let ActionConfig::Email(email) = action else {
            return Err(not_mine("the email executor", action));
        };
        let started = Instant::now();
        let subject = template::render("email.subject", &email.subject, event)?;
        let body = template::render("email.body_template", &email.body_template, event)?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject.trim())
            .header(ContentType::TEXT_PLAIN);
        for to in &email.to {
            let mailbox: Mailbox = to.parse().map_err(|e| {
                ActionConfigError::new("email.to", format!("{to:?} is not an email address: {e}"))
            })?;
            message = message.to(mailbox);
        }
        let message = message
            .body(body)
            .map_err(|e| Error::permanent(format!("cannot build the email: {e}")))?;
        // lettre bounds the connect only: a server that accepts and then
        // never answers would hold the action forever without this.
        let response = tokio::time::timeout(self.timeout, self.transport.send(message))
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
            .map_err(|e| self.classify(&e))?;
        Ok(ActionResult {
            action_type: "email".into(),
            success: true,
            message: format!(
                "SMTP {}: {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            ),
            duration_ms: elapsed_ms(started),
            status_code: None,
        })
    }
}
