//! Alerts: email over SMTP (lettre) and webhooks (a JSON POST, or a body
//! Slack or Microsoft Teams accept).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

/// `[alerts]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alert when a source has had no successful backup for this long
    /// (default `26h`): the dead man's switch.
    pub no_backup_within: Option<String>,
    /// Alert when a location's disk is expected to fill within this
    /// (default `14d`), going by its growth.
    pub full_within: Option<String>,
    #[serde(default)]
    pub email: Vec<EmailChannel>,
    #[serde(default)]
    pub webhook: Vec<WebhookChannel>,
}

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.email.iter().enumerate() {
            if e.smtp_host.trim().is_empty() || e.to.is_empty() || e.from.trim().is_empty() {
                return Err(format!(
                    "alerts.email[{i}] needs smtp_host, from and at least one address in to"
                ));
            }
            for a in std::iter::once(&e.from).chain(&e.to) {
                a.parse::<lettre::message::Mailbox>()
                    .map_err(|err| format!("alerts.email[{i}]: {a:?} is not an address: {err}"))?;
            }
            if e.username.is_some() != e.password_file.is_some() {
                return Err(format!(
                    "alerts.email[{i}]: give both username and password_file, or neither"
                ));
            }
        }
        for (i, w) in self.webhook.iter().enumerate() {
            match url::Url::parse(&w.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                Ok(_) => {
                    return Err(format!(
                        "alerts.webhook[{i}]: the url must be http:// or https://"
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "alerts.webhook[{i}]: the url {} is not valid: {e}",
                        crate::redact::webhook(&w.url)
                    ))
                }
            }
        }
        Ok(())
    }

    pub fn channels(&self) -> usize {
        self.email.len() + self.webhook.len()
    }
}

/// How to reach the SMTP server.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required), port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, port 465.
    Tls,
    /// No encryption: only for a relay on this machine or a test sink.
    None,
}

/// `[[alerts.email]]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    pub smtp_host: String,
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("to", &self.to)
            .finish()
    }
}

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The alert as JSON (see README).
    #[default]
    Json,
    /// `{"text": ...}`, which Slack and Teams incoming webhooks accept.
    Slack,
    Teams,
}

/// `[[alerts.webhook]]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
}

impl std::fmt::Debug for WebhookChannel {
    /// Webhook URLs carry their secret in the path: show only the host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("url", &crate::redact::webhook(&self.url))
            .field("format", &self.format)
            .finish()
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    JobFailed,
    SuspectSnapshot,
    DrillFailed,
    DestinationFull,
    NoRecentBackup,
    /// The repository's storage did not answer the watch's probe.
    StorageUnreachable,
    Test,
}

/// One alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// One line, e.g. `backup failed: ...`.
    pub summary: String,
    /// More lines: what happened and what to do.
    pub detail: String,
    pub host: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

impl Alert {
    pub fn new(kind: AlertKind, summary: impl Into<String>, detail: impl Into<String>) -> Alert {
        Alert {
            kind,
            summary: summary.into(),
            detail: detail.into(),
            host: ledgervault_repo::host_name(),
            time: chrono::Utc::now(),
        }
    }

    fn subject(&self) -> String {
        format!("[ledgervault {}] {}", self.host, self.summary)
    }

    fn text(&self) -> String {
        format!(
            "{}\n\n{}\n\nhost: {}\ntime: {}\n",
            self.summary,
            self.detail,
            self.host,
            self.time.to_rfc3339()
        )
    }
}

/// Sends `alert` on every channel; returns one line per channel that failed.
pub fn send(cfg: &AlertsConfig, alert: &Alert) -> Vec<String> {
    let mut failed = Vec::new();
    for e in &cfg.email {
        if let Err(err) = send_email(e, alert) {
            failed.push(format!("email via {}: {err:#}", e.smtp_host));
        }
    }
    for w in &cfg.webhook {
        if let Err(err) = send_webhook(w, alert) {
            failed.push(format!(
                "webhook {}: {err:#}",
                crate::redact::webhook(&w.url)
            ));
        }
    }
    failed
}

fn send_email(c: &EmailChannel, alert: &Alert) -> Result<()> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};

    let mut msg = Message::builder()
        .from(c.from.parse().context("bad from address")?)
        .subject(alert.subject());
    for to in &c.to {
        msg = msg.to(to.parse().context("bad to address")?);
    }
    let msg = msg
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(alert.text())
        .context("cannot build the message")?;
    let mut t = match c.tls {
        SmtpTls::Tls => SmtpTransport::relay(&c.smtp_host)?,
        SmtpTls::Starttls => SmtpTransport::starttls_relay(&c.smtp_host)?,
        SmtpTls::None => SmtpTransport::builder_dangerous(&c.smtp_host),
    };
    if let Some(p) = c.smtp_port {
        t = t.port(p);
    }
    if let (Some(user), Some(file)) = (&c.username, &c.password_file) {
        let pw = crate::redact::read_limited_string(
            file,
            crate::redact::SECRET_FILE_LIMIT,
            "SMTP password file",
        )?;
        t = t.credentials(Credentials::new(user.clone(), pw.trim_end().to_string()));
    }
    t.timeout(Some(Duration::from_secs(20)))
        .build()
        .send(&msg)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn send_webhook(w: &WebhookChannel, alert: &Alert) -> Result<()> {
    let body = match w.format {
        WebhookFormat::Json => serde_json::to_value(alert).expect("alert serializes"),
        WebhookFormat::Slack | WebhookFormat::Teams => {
            serde_json::json!({ "text": format!("*{}*\n{}", alert.subject(), alert.detail) })
        }
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .redirects(0)
        .build();
    match agent
        .post(&w.url)
        .set("Content-Type", "application/json")
        .set(
            "User-Agent",
            concat!("ledgervault/", env!("CARGO_PKG_VERSION")),
        )
        .send_string(&body.to_string())
    {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(anyhow!("the receiver answered HTTP {code}")),
        // The transport error may repeat the URL; say what failed without it.
        Err(ureq::Error::Transport(t)) => Err(anyhow!("{}", t.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_redacted() {
        let c: AlertsConfig =
            toml::from_str("[[webhook]]\nurl = \"https://h.example/secret-token\"\n").unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
    }

    #[test]
    fn bad_channels_are_refused() {
        let bad: AlertsConfig = toml::from_str(
            "[[email]]\nsmtp_host = \"h\"\nfrom = \"nope\"\nto = [\"a@b.example\"]\n",
        )
        .unwrap();
        assert!(bad.validate().unwrap_err().contains("not an address"));
        let bad: AlertsConfig = toml::from_str("[[webhook]]\nurl = \"ftp://x\"\n").unwrap();
        assert!(bad.validate().is_err());
    }
}
