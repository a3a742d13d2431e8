//! Actions: what an observer does for an event, and their validation.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use super::endpoint::{request_url, url_endpoint};
use super::error::ActionConfigError;
use super::template;

/// An HTTP call to a URL.
///
/// `Debug` leaves the signing secret out.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAction {
    /// `http://` or `https://` URL.
    pub url: String,
    /// HTTP method, `POST` by default.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers. Those that frame the request (`Host`,
    /// `Content-Length`, `Transfer-Encoding`, `Connection` and the other
    /// hop-by-hop headers) are the HTTP client's and refused here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template (see the module docs for its variables); the event as
    /// JSON when absent.
    #[serde(default)]
    pub body_template: Option<String>,
    /// When set, each request is signed the Standard Webhooks way
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature` headers) with
    /// this secret: `whsec_` followed by the base64 of at least 16 bytes.
    #[serde(default)]
    pub signing_secret: Option<String>,
}

impl fmt::Debug for WebhookAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAction")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("body_template", &self.body_template)
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn default_method() -> String {
    "POST".to_string()
}

/// A message to a Slack incoming webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAction {
    /// The incoming-webhook URL.
    pub webhook_url: String,
    /// Channel override.
    #[serde(default)]
    pub channel: Option<String>,
    /// Message template; `EVENT_TYPE entity_type entity_id` when absent.
    #[serde(default)]
    pub message_template: Option<String>,
}

/// An email.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailAction {
    /// Recipients.
    pub to: Vec<String>,
    /// Subject line (a template too).
    pub subject: String,
    /// Body template.
    pub body_template: String,
}

/// A log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAction {
    /// `trace`, `debug`, `info`, `warn` or `error`; `info` by default.
    #[serde(default = "default_level")]
    pub level: String,
    /// Message template; `EVENT_TYPE entity_type entity_id` when absent.
    #[serde(default)]
    pub message_template: Option<String>,
}

fn default_level() -> String {
    "info".to_string()
}

/// One action an observer takes for an event, tagged by `type` in configuration.
///
/// # Examples
///
/// ```
/// use breakwater::traits::ActionConfig;
///
/// let action: ActionConfig = serde_json::from_str(
///     r#"{ "type": "webhook", "url": "https://hooks.example.com/orders?x=1" }"#,
/// ).unwrap();
/// assert_eq!(action.action_type(), "webhook");
/// assert_eq!(action.endpoint(), "https://hooks.example.com:443");
/// assert!(action.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ActionConfig {
    /// An HTTP call.
    Webhook(WebhookAction),
    /// A Slack message.
    Slack(SlackAction),
    /// An email.
    Email(EmailAction),
    /// A log line.
    Log(LogAction),
}

impl ActionConfig {
    /// `webhook`, `slack`, `email` or `log`.
    pub fn action_type(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Slack(_) => "slack",
            Self::Email(_) => "email",
            Self::Log(_) => "log",
        }
    }

    /// The key the action's breaker is chosen by: `scheme://host:port` for
    /// URLs (path and query left out, so metrics labels stay few), the
    /// action type otherwise. A URL that does not parse is its own key.
    pub fn endpoint(&self) -> String {
        match self {
            Self::Webhook(w) => url_endpoint(&w.url),
            Self::Slack(s) => url_endpoint(&s.webhook_url),
            Self::Email(_) => "email".to_string(),
            Self::Log(_) => "log".to_string(),
        }
    }

    /// Checks the action.
    ///
    /// # Errors
    ///
    /// An [`ActionConfigError`] naming the field at fault.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::traits::{ActionConfig, WebhookAction};
    ///
    /// let mut hook = WebhookAction {
    ///     url: "ftp://files.example.com".into(),
    ///     method: "POST".into(),
    ///     headers: Default::default(),
    ///     body_template: None,
    ///     signing_secret: None,
    /// };
    /// let err = ActionConfig::Webhook(hook.clone()).validate().unwrap_err();
    /// assert_eq!(err.field, "webhook.url");
    /// hook.url = "https://hooks.example.com/x".into();
    /// hook.headers.insert("Bad Header".into(), "v".into());
    /// let err = ActionConfig::Webhook(hook).validate().unwrap_err();
    /// assert_eq!(err.field, "webhook.headers");
    /// ```
    pub fn validate(&self) -> Result<(), ActionConfigError> {
        self.validated_endpoint().map(drop)
    }

    /// Every problem [`validate`](Self::validate) would find, not only the
    /// first: for a configuration checker that reports them all at once.
    /// Empty when the action is valid.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::traits::{ActionConfig, WebhookAction};
    ///
    /// let hook = ActionConfig::Webhook(WebhookAction {
    ///     url: "https://hooks.example.com/x".into(),
    ///     method: "TRACE".into(),
    ///     headers: Default::default(),
    ///     body_template: None,
    ///     signing_secret: Some("whsec_short".into()),
    /// });
    /// let fields: Vec<&str> = hook.problems().iter().map(|p| p.field).collect();
    /// assert_eq!(fields, ["webhook.method", "webhook.signing_secret"]);
    /// assert_eq!(hook.validate().unwrap_err().field, "webhook.method");
    /// ```
    pub fn problems(&self) -> Vec<ActionConfigError> {
        let mut all = Vec::new();
        self.check(&mut |p| {
            all.push(p);
            true
        });
        all
    }

    /// [`ActionConfig::validate`], returning [`ActionConfig::endpoint`] from
    /// the same parse of the URL.
    pub(crate) fn validated_endpoint(&self) -> Result<String, ActionConfigError> {
        let mut first = None;
        let key = self.check(&mut |p| {
            first = Some(p);
            false
        });
        match (first, key) {
            (Some(problem), _) => Err(problem),
            (None, Some(key)) => Ok(key),
            // Unreachable: no key is only given with a problem.
            (None, None) => Ok(self.endpoint()),
        }
    }

    /// Runs every check in order, giving each problem to `found`, which
    /// says whether to go on; returns the endpoint key when the URL is good.
    fn check(&self, found: &mut dyn FnMut(ActionConfigError) -> bool) -> Option<String> {
        // Each check's problem, if any; false once `found` says stop.
        let mut go = |r: Result<(), ActionConfigError>| match r {
            Ok(()) => true,
            Err(p) => found(p),
        };
        match self {
            Self::Webhook(w) => {
                let (key, on) = url_key(&w.url, "webhook.url", &mut go);
                let _ = on
                    && go(webhook_method(&w.method).map(drop))
                    && go(webhook_headers(&w.headers).map(drop))
                    && go(w
                        .body_template
                        .as_deref()
                        .map_or(Ok(()), |t| template::check("webhook.body_template", t)))
                    && go(w.signing_secret.as_deref().map_or(Ok(()), |secret| {
                        signing_key(secret)
                            .map(drop)
                            .map_err(|m| ActionConfigError::new("webhook.signing_secret", m))
                    }));
                key
            }
            Self::Slack(s) => {
                let (key, on) = url_key(&s.webhook_url, "slack.webhook_url", &mut go);
                let _ = on
                    && go(s
                        .message_template
                        .as_deref()
                        .map_or(Ok(()), |t| template::check("slack.message_template", t)));
                key
            }
            Self::Email(e) => {
                let mut ok = true;
                if e.to.is_empty() {
                    ok = go(Err(ActionConfigError::new(
                        "email.to",
                        "needs at least one recipient",
                    )));
                }
                for bad in e.to.iter().filter(|a| !is_plausible_email(a)) {
                    ok = ok
                        && go(Err(ActionConfigError::new(
                            "email.to",
                            format!("{bad:?} is not an email address"),
                        )));
                }
                ok = ok
                    && go(if e.subject.trim().is_empty() {
                        Err(ActionConfigError::new("email.subject", "must not be empty"))
                    } else {
                        template::check("email.subject", &e.subject)
                    });
                ok = ok && go(template::check("email.body_template", &e.body_template));
                ok.then(|| self.endpoint())
            }
            Self::Log(l) => {
                let level_ok =
                    ["trace", "debug", "info", "warn", "error"].contains(&l.level.as_str());
                let ok = go(if level_ok {
                    Ok(())
                } else {
                    Err(ActionConfigError::new(
                        "log.level",
                        format!(
                            "must be trace, debug, info, warn or error, got {:?}",
                            l.level
                        ),
                    ))
                }) && go(l
                    .message_template
                    .as_deref()
                    .map_or(Ok(()), |t| template::check("log.message_template", t)));
                ok.then(|| self.endpoint())
            }
        }
    }
}

/// The endpoint key of a good `url`, or its problem given to `go`; and
/// whether to go on checking.
fn url_key(
    url: &str,
    field: &'static str,
    go: &mut impl FnMut(Result<(), ActionConfigError>) -> bool,
) -> (Option<String>, bool) {
    match request_url(url, field) {
        Ok((_, url)) => (Some(url.key()), true),
        Err(p) => (None, go(Err(p))),
    }
}

/// The methods a webhook may use.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// A webhook's method, any case.
pub(crate) fn webhook_method(method: &str) -> Result<Method, ActionConfigError> {
    Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .ok()
        .filter(|m| METHODS.contains(m))
        .ok_or_else(|| {
            ActionConfigError::new(
                "webhook.method",
                format!("must be GET, POST, PUT, PATCH or DELETE, got {method:?}"),
            )
        })
}

/// Headers that frame the request or its connection: the client writes
/// them from the URL and the body, and one set by hand would cut the body
/// short, hang the request or name another host than the one connected to.
const CLIENT_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A webhook's extra headers, checked by `http`'s own types; those in
/// [`CLIENT_HEADERS`] are refused.
pub(crate) fn webhook_headers(
    headers: &BTreeMap<String, String>,
) -> Result<HeaderMap, ActionConfigError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            return Err(ActionConfigError::new(
                "webhook.headers",
                format!("{name:?} is not a valid header name"),
            ));
        };
        if CLIENT_HEADERS.contains(&header.as_str()) {
            return Err(ActionConfigError::new(
                "webhook.headers",
                format!(
                    "{name:?} is set by the HTTP client from the URL and the body, \
                     not by an action"
                ),
            ));
        }
        let Ok(v) = HeaderValue::from_str(value) else {
            let message = match value
                .bytes()
                .position(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                Some(i) => format!(
                    "the value of {name:?} holds the control byte {:#04x} at {i}",
                    value.as_bytes()[i]
                ),
                None => format!("the value of {name:?} is not a valid header value"),
            };
            return Err(ActionConfigError::new("webhook.headers", message));
        };
        map.append(header, v);
    }
    Ok(map)
}

/// The HMAC key of a Standard Webhooks secret: the base64 after an optional
/// `whsec_` prefix, at least 16 bytes. The error never repeats the secret.
pub(crate) fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    if encoded.is_empty() {
        return Err("must not be empty when set (expected whsec_ followed by base64)".into());
    }
    let key = BASE64
        .decode(encoded)
        // The decoder's own message names a byte of the secret and where it
        // is: not repeated.
        .map_err(|_| {
            "is not valid standard base64 (after an optional whsec_ prefix)".to_string()
        })?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "decodes to {} bytes; a signing key needs at least {MIN_KEY_BYTES}",
            key.len()
        ));
    }
    Ok(key)
}

/// The shortest signing key accepted.
const MIN_KEY_BYTES: usize = 16;

/// Whether `a` is an address an email can go to: `user@host` or
/// `Name <user@host>`. With the `webhook` feature this is the SMTP
/// executor's own parser (lettre's), so that what validates is what sends.
#[cfg(feature = "webhook")]
fn is_plausible_email(a: &str) -> bool {
    a.parse::<lettre::message::Mailbox>().is_ok()
}

/// Whether `a` is an address an email can go to: `user@host` or
/// `Name <user@host>`.
#[cfg(not(feature = "webhook"))]
fn is_plausible_email(a: &str) -> bool {
    let a = a.trim();
    let addr = match a.split_once('<') {
        Some((name, rest)) => match rest.strip_suffix('>') {
            Some(addr) if !name.contains('>') => addr,
            _ => return false,
        },
        None => a,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let atom = |c: char| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c);
    let label = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-');
    !local.is_empty()
        && local.chars().all(atom)
        && ((domain.starts_with('[') && domain.ends_with(']') && domain.len() > 2)
            || domain.split('.').all(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_config_is_tagged_by_type_and_refuses_unknown_fields() {
        let a: ActionConfig = serde_json::from_str(
            r##"{"type":"slack","webhook_url":"https://hooks.slack.com/services/T/B/X","channel":"#ops"}"##,
        )
        .unwrap();
        assert_eq!(a.action_type(), "slack");
        assert_eq!(a.endpoint(), "https://hooks.slack.com:443");
        let e = serde_json::from_str::<ActionConfig>(
            r#"{"type":"webhook","url":"http://a","bogus":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = serde_json::from_str::<ActionConfig>(r#"{"type":"sms"}"#).unwrap_err();
        assert!(e.to_string().contains("sms"), "{e}");
        let l: ActionConfig = serde_json::from_str(r#"{"type":"log"}"#).unwrap();
        assert_eq!(
            l,
            ActionConfig::Log(LogAction {
                level: "info".into(),
                message_template: None
            })
        );
    }

    #[test]
    fn validation_keys_every_action_as_endpoint_does() {
        let actions: Vec<ActionConfig> = [
            r#"{"type":"webhook","url":"https://Hooks.Example.com/a/b?c=1"}"#,
            r#"{"type":"webhook","url":"http://[::1]:8080/x"}"#,
            r#"{"type":"webhook","url":"http://a.example\\@b.example/"}"#,
            r#"{"type":"slack","webhook_url":"https://hooks.slack.com/services/T/B/X"}"#,
            r#"{"type":"email","to":["ops@example.com"],"subject":"s","body_template":"b"}"#,
            r#"{"type":"log"}"#,
        ]
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
        for a in &actions {
            assert_eq!(a.validated_endpoint(), Ok(a.endpoint()), "{a:?}");
        }
        assert_eq!(
            actions[0].validated_endpoint().unwrap(),
            "https://hooks.example.com:443"
        );
        assert_eq!(
            actions[2].validated_endpoint().unwrap(),
            "http://a.example:80"
        );
        let bad: ActionConfig =
            serde_json::from_str(r#"{"type":"webhook","url":"ftp://x"}"#).unwrap();
        assert_eq!(bad.validated_endpoint().unwrap_err().field, "webhook.url");
    }

    #[test]
    fn validation_names_the_field() {
        let hook = |url: &str, method: &str| {
            ActionConfig::Webhook(WebhookAction {
                url: url.into(),
                method: method.into(),
                headers: BTreeMap::new(),
                body_template: None,
                signing_secret: None,
            })
        };
        assert_eq!(
            hook("", "POST").validate().unwrap_err().field,
            "webhook.url"
        );
        assert_eq!(
            hook("http://a", "BREW").validate().unwrap_err().field,
            "webhook.method"
        );
        assert!(hook("http://a", "post").validate().is_ok());
        let mut w = WebhookAction {
            url: "http://a".into(),
            method: "POST".into(),
            headers: BTreeMap::from([("X-Ok".into(), "a\r\nInjected: 1".into())]),
            body_template: None,
            signing_secret: None,
        };
        assert_eq!(
            ActionConfig::Webhook(w.clone())
                .validate()
                .unwrap_err()
                .field,
            "webhook.headers"
        );
        w.headers.clear();
        w.signing_secret = Some(String::new());
        assert_eq!(
            ActionConfig::Webhook(w).validate().unwrap_err().field,
            "webhook.signing_secret"
        );
        let email = |to: Vec<&str>, subject: &str| {
            ActionConfig::Email(EmailAction {
                to: to.into_iter().map(String::from).collect(),
                subject: subject.into(),
                body_template: String::new(),
            })
        };
        assert_eq!(email(vec![], "s").validate().unwrap_err().field, "email.to");
        assert_eq!(
            email(vec!["nobody"], "s").validate().unwrap_err().field,
            "email.to"
        );
        assert_eq!(
            email(vec!["a@b.c"], " ").validate().unwrap_err().field,
            "email.subject"
        );
        assert!(email(vec!["a@b.c"], "hi").validate().is_ok());
        // What validates is what the SMTP executor can send to.
        for good in [
            "Ops <ops@example.com>",
            "ops@localhost",
            "first.last+tag@mail.example.org",
        ] {
            assert!(email(vec![good], "hi").validate().is_ok(), "{good}");
        }
        for bad in [
            "a@b.c>",
            "a b@c.d",
            "@x.y",
            "ops@",
            "<ops@example.com",
            "x@y..z",
        ] {
            assert_eq!(
                email(vec![bad], "hi").validate().unwrap_err().field,
                "email.to",
                "{bad}"
            );
        }
        let log = ActionConfig::Log(LogAction {
            level: "loud".into(),
            message_template: None,
        });
        assert_eq!(log.validate().unwrap_err().field, "log.level");
    }

    /// Regression: header values with control bytes other than CR, LF and
    /// NUL passed `validate()` although `http::HeaderValue` refuses them.
    #[test]
    fn header_values_with_control_bytes_are_refused() {
        for bad in [
            "a\x01b",
            "tab\tok\x7f",
            "esc\x1b[0m",
            "a\rb",
            "a\nb",
            "a\0b",
        ] {
            let action = ActionConfig::Webhook(WebhookAction {
                url: "http://a".into(),
                method: "POST".into(),
                headers: BTreeMap::from([("X-Ok".into(), bad.into())]),
                body_template: None,
                signing_secret: None,
            });
            let err = action.validate().unwrap_err();
            assert_eq!(err.field, "webhook.headers", "{bad:?}");
            assert!(err.message.contains("control byte"), "{bad:?}: {err}");
        }
        let ok = ActionConfig::Webhook(WebhookAction {
            url: "http://a".into(),
            method: "POST".into(),
            headers: BTreeMap::from([("X-Ok".into(), "tab\tand space".into())]),
            body_template: None,
            signing_secret: None,
        });
        assert!(ok.validate().is_ok());
        let bad_name = ActionConfig::Webhook(WebhookAction {
            url: "http://a".into(),
            method: "POST".into(),
            headers: BTreeMap::from([("X(Bad)".into(), "v".into())]),
            body_template: None,
            signing_secret: None,
        });
        assert_eq!(bad_name.validate().unwrap_err().field, "webhook.headers");
    }

    #[test]
    fn urls_with_user_info_are_refused_without_repeating_it() {
        let hook = ActionConfig::Webhook(WebhookAction {
            url: "https://alice:pa55word@hooks.example.com/x".into(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body_template: None,
            signing_secret: None,
        });
        let err = hook.validate().unwrap_err();
        assert_eq!(err.field, "webhook.url");
        assert!(err.message.contains("Authorization"), "{err}");
        assert!(
            !err.message.contains("pa55word") && !err.message.contains("alice"),
            "{err}"
        );
        let slack = ActionConfig::Slack(SlackAction {
            webhook_url: "https://u@hooks.slack.com/services/T/B/X".into(),
            channel: None,
            message_template: None,
        });
        assert_eq!(slack.validate().unwrap_err().field, "slack.webhook_url");
    }

    #[test]
    fn headers_that_frame_the_request_are_refused() {
        let with = |name: &str| {
            ActionConfig::Webhook(WebhookAction {
                url: "http://a".into(),
                method: "POST".into(),
                headers: BTreeMap::from([(name.into(), "3".into())]),
                body_template: None,
                signing_secret: None,
            })
        };
        for name in [
            "Content-Length",
            "host",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
        ] {
            let err = with(name).validate().unwrap_err();
            assert_eq!(err.field, "webhook.headers", "{name}");
            assert!(err.message.contains(name), "{name}: {err}");
            assert!(err.message.contains("HTTP client"), "{name}: {err}");
        }
        for name in ["Content-Type", "Authorization", "X-Host", "Accept"] {
            assert!(with(name).validate().is_ok(), "{name}");
        }
    }

    fn signed(secret: &str) -> ActionConfig {
        ActionConfig::Webhook(WebhookAction {
            url: "https://hooks.example.com/x".into(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body_template: None,
            signing_secret: Some(secret.into()),
        })
    }

    #[test]
    fn signing_secrets_must_be_base64_of_16_bytes_or_more() {
        assert!(signed("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .validate()
            .is_ok());
        for (secret, want) in [
            ("whsec_not base64!", "not valid standard base64"),
            ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
            ("whsec_", "must not be empty"),
            ("", "must not be empty"),
        ] {
            let err = signed(secret).validate().unwrap_err();
            assert_eq!(err.field, "webhook.signing_secret", "{secret}");
            assert!(err.message.contains(want), "{secret}: {err}");
            if secret.len() > 6 {
                assert!(
                    !err.to_string().contains(&secret[6..]),
                    "the secret leaked: {err}"
                );
            }
        }
    }

    #[test]
    fn debug_hides_the_signing_secret() {
        let text = format!("{:?}", signed("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"));
        assert!(!text.contains("C2FVsBQ"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn template_syntax_errors_name_the_field() {
        let a = ActionConfig::Log(LogAction {
            level: "info".into(),
            message_template: Some("{{ entity_type".into()),
        });
        assert_eq!(a.validate().unwrap_err().field, "log.message_template");
        let a = ActionConfig::Webhook(WebhookAction {
            url: "http://a".into(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body_template: Some("{% if %}".into()),
            signing_secret: None,
        });
        assert_eq!(a.validate().unwrap_err().field, "webhook.body_template");
        let a = ActionConfig::Email(EmailAction {
            to: vec!["a@b.c".into()],
            subject: "{{ oops".into(),
            body_template: String::new(),
        });
        assert_eq!(a.validate().unwrap_err().field, "email.subject");
    }
}
