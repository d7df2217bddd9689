//! Email over SMTP (RUN.md §3, `provider: smtp`): the message of
//! [`super::email`] sent with lettre's SMTP client over a pool of
//! connections sized per channel (`pool`, default 8).
//!
//! Owns: the Project's `url` (`smtp://host:port` plain,
//! `smtp://host:port?tls=required` STARTTLS, `?tls=opportunistic` STARTTLS
//! when offered, `smtps://host:port` implicit TLS; the URL's path, if any,
//! is the EHLO name, else the machine's host name), credentials from the
//! env vars the channel names, the connection pool, the start-up check
//! ([`Provider::ready`]) and the classification of SMTP answers.
//!
//! Knows nothing of: the store, retries' timing (the worker's
//! [`super::retry::Backoff`] decides), the message's headers (built by
//! [`super::email::Composer`]).
//!
//! ## Why its own pool (TCP_NODELAY)
//!
//! lettre's pooled `AsyncSmtpTransport` opens its sockets itself and never
//! sets `TCP_NODELAY`, and offers no hook to do so. SMTP is a lock-step
//! dialogue of small writes (`MAIL`, `RCPT`, `DATA`, the body, then the
//! final `.`): with Nagle's algorithm on, the last small write of a
//! message waits for the server's delayed ACK (~40 ms on Linux), which
//! capped lettre's transport at ~180 emails/s with 8 connections whatever
//! the server. lettre does offer
//! [`AsyncSmtpConnection::connect_with_transport`], which takes a stream
//! that is already connected: so this module connects the TCP socket
//! itself (with `set_nodelay(true)`), wraps it in TLS itself for
//! `smtps://` (tokio-rustls, the same rustls as lettre's), and hands it to
//! lettre, which speaks SMTP on it (greeting, EHLO, STARTTLS, AUTH, and
//! each command). The pool around those connections is small: a
//! semaphore with `pool` permits (so at most `pool` connections exist:
//! every connection is either idle or held by a permit) and a stack of
//! idle connections, the most recently used first. A connection idle for
//! more than a minute is closed rather than reused.
//!
//! ## One message
//!
//! `MAIL FROM`, `RCPT TO`, `DATA` and the body are sent as separate
//! commands so that the stage of a refusal is known. After a refusal the
//! connection is reset (`RSET`) and goes back to the pool; after a network
//! error or a timeout (`timeout`, default 30 s, for the whole exchange) it
//! is dropped. A reused connection that turns out to be closed by the
//! server (a network error or a `421` before `RCPT`) is replaced once at
//! once, so an idle connection the server dropped costs no retry.
//!
//! Classification (RUN.md §3 "Retries"):
//!
//! - `4xx` anywhere, connection and TLS errors, timeouts: transient;
//! - `5xx` anywhere: permanent;
//! - a `5xx` for the recipient marks the address bounced
//!   ([`AddressNews::EmailBounced`]): any `5xx` to `RCPT TO` except the
//!   enhanced codes that speak of the sender or of policy (`5.1.7`,
//!   `5.1.8`, `5.7.x`: relaying denied, authentication required, a block),
//!   and a `5xx` to `DATA` or to the body whose enhanced code speaks of the
//!   mailbox (`5.1.x` but `5.1.7`/`5.1.8`, `5.2.x`), as servers that check
//!   recipients late answer.
//!
//! A repeated delivery (after a crash, or when the server's `250` to the
//! body was lost to a timeout) sends the message again with the same
//! `Message-ID`, which receivers use to drop the copy. Failure reasons
//! quote at most 200 characters of the server's answer, with every word
//! that holds an `@` replaced by `<address>` (reasons are logged).

use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters, TlsParametersBuilder,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use journeys::compiled::Channel;

use super::dkim::Dkim;
use super::email::Composer;
use super::sign::UnsubscribeLinks;
use super::{Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::dispatch::{AddressNews, Message};

/// A connection idle longer than this is closed, not reused.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How much of a server's answer goes into a failure's reason.
const REASON_CHARS: usize = 200;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: no TLS.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, or no delivery.
    StartTls,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// Where to connect, from the channel's `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The EHLO name: the URL's path, else the machine's host name.
    pub hello: Option<String>,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Server {
    /// Parses an SMTP URL. The reason never repeats the URL (it could
    /// hold a password).
    pub fn parse(text: &str) -> Result<Server, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "credentials do not belong in the URL: name env vars with `username_env` and `password_env`"
                    .into(),
            );
        }
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(format!(
                "the scheme `{}`: use smtp:// or smtps://",
                url.scheme()
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err("no host".into()),
        };
        let mut tls = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "tls" => tls = Some(v.into_owned()),
                other => return Err(format!("unknown parameter `{other}` (only `tls`)")),
            }
        }
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls, 587),
            ("smtp", Some("opportunistic")) => (Security::Opportunistic, 587),
            ("smtp", Some(other)) => {
                return Err(format!(
                    "`tls={other}`: use `tls=required` (STARTTLS) or `tls=opportunistic`, or smtps:// for implicit TLS"
                ))
            }
            ("smtps", None) => (Security::Implicit, 465),
            ("smtps", Some(_)) => {
                return Err("smtps:// is TLS from the start: drop the `tls` parameter".into())
            }
            (scheme, _) => {
                return Err(format!(
                    "the scheme `{scheme}`: use smtp:// or smtps://"
                ))
            }
        };
        let path = url.path().trim_matches('/');
        Ok(Server {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            hello: (!path.is_empty()).then(|| path.to_owned()),
        })
    }
}

/// The SMTP provider's settings, resolved (env vars read, files found).
#[derive(Clone)]
pub struct Config {
    pub server: Server,
    /// The channel's default `From`.
    pub from: String,
    /// User name and password, from the env vars the channel names.
    pub credentials: Option<(String, String)>,
    /// Connections kept open at most (at least 1).
    pub pool: usize,
    /// Connecting, and then each message.
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM), and the file they came from.
    pub ca: Option<(PathBuf, Vec<u8>)>,
    pub dkim: Option<Dkim>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("from", &self.from)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .field("ca", &self.ca.as_ref().map(|(p, _)| p))
            .field("dkim", &self.dkim)
            .finish()
    }
}

/// The TLS settings for both ways of starting TLS.
#[derive(Clone)]
struct Tls {
    /// For STARTTLS, through lettre.
    starttls: TlsParameters,
    /// For `smtps://`, on the socket opened here.
    implicit: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

/// The SMTP provider.
pub struct Smtp {
    inner: Arc<Inner>,
}

struct Inner {
    server: Server,
    hello: ClientId,
    credentials: Option<Credentials>,
    composer: Composer,
    tls: Option<Tls>,
    timeout: Duration,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// A connection taken from the pool or opened for this message.
struct Conn {
    conn: AsyncSmtpConnection,
    reused: bool,
}

/// A TLS stream lettre can speak SMTP on.
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsStream")
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// Where a message's exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Mail,
    Rcpt,
    Data,
    Body,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connecting",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body => "the end of the message",
        }
    }
}

/// Why an exchange failed.
enum Cause {
    /// lettre's error: an SMTP answer, a network or TLS error.
    Smtp(lettre::transport::smtp::Error),
    /// Connecting or setting up the socket.
    Io(std::io::Error),
    TimedOut,
    /// This message cannot go to this server (an extension it lacks).
    Unsupported(&'static str),
}

impl Cause {
    fn status(&self) -> Option<lettre::transport::smtp::response::Code> {
        match self {
            Cause::Smtp(e) => e.status(),
            _ => None,
        }
    }

    fn is_permanent(&self) -> bool {
        matches!(self, Cause::Smtp(e) if e.is_permanent())
    }

    /// A mistake on this side that trying again will not fix.
    fn is_client(&self) -> bool {
        match self {
            Cause::Smtp(e) => e.is_client(),
            Cause::Unsupported(_) => true,
            Cause::Io(_) | Cause::TimedOut => false,
        }
    }

    /// The server's answer, or the error, for people.
    fn detail(&self) -> String {
        match self {
            Cause::Smtp(e) if e.status().is_some() => match std::error::Error::source(e) {
                Some(s) => scrub(&s.to_string()),
                None => String::new(),
            },
            Cause::Smtp(e) => scrub(crate::os::without_code(&e.to_string())),
            Cause::Io(e) => scrub(&crate::os::reason(e)),
            Cause::TimedOut => "timed out".into(),
            Cause::Unsupported(what) => (*what).to_owned(),
        }
    }
}

/// A failed exchange: where, and why.
struct Refusal {
    stage: Stage,
    error: Cause,
}

fn tls_config(ca: Option<&(PathBuf, Vec<u8>)>, host: &str) -> Result<Tls, Error> {
    let bad_ca = |reason: String| Error::CaFile {
        path: ca.map(|(p, _)| p.clone()).unwrap_or_default(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut starttls = TlsParametersBuilder::new(host.to_owned());
    if let Some((_, pem)) = ca {
        use rustls::pki_types::pem::PemObject;
        let mut n = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| bad_ca(format!("not PEM certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad_ca(format!("a certificate rustls refuses: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad_ca("no certificate in it".into()));
        }
        let cert = Certificate::from_pem(pem).map_err(|e| bad_ca(e.to_string()))?;
        starttls = starttls.add_root_certificate(cert);
    }
    let starttls = starttls
        .build_rustls()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Tls(format!("{host} is not a TLS server name: {e}")))?;
    Ok(Tls {
        starttls,
        implicit: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    })
}

/// Whether `host` is on this machine (credentials over plain TCP to it
/// are not worth a warning).
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

impl Smtp {
    /// Prepares the provider; connects nothing (see [`Provider::ready`]).
    pub fn new(config: Config, links: Arc<dyn UnsubscribeLinks>) -> Result<Smtp, Error> {
        let composer = Composer::new(&config.from, links, config.dkim.clone())?;
        let tls = match config.server.security {
            Security::Plain => None,
            _ => Some(tls_config(config.ca.as_ref(), &config.server.host)?),
        };
        if config.credentials.is_some()
            && config.server.security != Security::Implicit
            && config.server.security != Security::StartTls
            && !is_loopback(&config.server.host)
        {
            tracing::warn!(
                server = %config.server,
                "SMTP credentials may cross the network unencrypted: use smtps:// or ?tls=required"
            );
        }
        let hello = match &config.server.hello {
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        let pool = config.pool.max(1);
        Ok(Smtp {
            inner: Arc::new(Inner {
                server: config.server,
                hello,
                credentials: config.credentials.map(|(u, p)| Credentials::new(u, p)),
                composer,
                tls,
                timeout: if config.timeout.is_zero() {
                    Duration::from_secs(30)
                } else {
                    config.timeout
                },
                permits: Arc::new(Semaphore::new(pool)),
                idle: Mutex::new(Vec::with_capacity(pool)),
            }),
        })
    }

    /// The server it sends to.
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// The message as the server will receive it.
    pub fn format(&self, message: &Message) -> Result<Vec<u8>, Failure> {
        Ok(self.inner.composer.compose(message)?.formatted())
    }
}

/// The server's words, bounded and without addresses.
fn scrub(text: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| if w.contains('@') { "<address>" } else { w })
        .collect();
    let joined = words.join(" ");
    if joined.chars().count() > REASON_CHARS {
        let cut: String = joined.chars().take(REASON_CHARS).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

/// The enhanced status code (RFC 3463) that starts an answer's text, as
/// (class, subject, detail).
fn enhanced(text: &str) -> Option<(u16, u16, u16)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((class, subject, detail))
}

/// Whether a permanent refusal at `stage` says the recipient's mailbox is
/// gone (see the module docs).
fn is_bounce(stage: Stage, text: &str) -> bool {
    let code = enhanced(text);
    let sender = matches!(code, Some((_, 1, 7 | 8)));
    match stage {
        Stage::Rcpt => !sender && !matches!(code, Some((_, 7, _))),
        Stage::Data | Stage::Body => !sender && matches!(code, Some((_, 1 | 2, _))),
        Stage::Connect | Stage::Mail => false,
    }
}

impl Refusal {
    /// The failure the worker records.
    fn failure(&self, server: &Server, to: &str) -> Failure {
        let what = self.stage.as_str();
        let text = self.error.detail();
        match self.error.status() {
            Some(code) if self.error.is_permanent() => {
                let reason = format!("{server} answered {code} to {what}: {text}");
                let failure = Failure::permanent(reason);
                if is_bounce(self.stage, &text) {
                    failure.with_news(AddressNews::EmailBounced {
                        address: to.to_owned(),
                    })
                } else {
                    failure
                }
            }
            Some(code) => Failure::transient(format!("{server} answered {code} to {what}: {text}")),
            None if self.error.is_client() => {
                Failure::permanent(format!("cannot send to {server} ({what}): {text}"))
            }
            None => Failure::transient(format!("{server}: {text} ({what})")),
        }
    }

    /// Whether the connection was probably closed by the server while it
    /// sat in the pool: worth one more try on a new connection at once.
    fn stale(&self) -> bool {
        self.stage == Stage::Mail
            && match self.error.status() {
                Some(code) => u16::from(code) == 421,
                None => !self.error.is_client(),
            }
    }
}

fn timed_out(stage: Stage) -> Refusal {
    Refusal {
        stage,
        error: Cause::TimedOut,
    }
}

impl Inner {
    /// Opens a connection: TCP with `TCP_NODELAY`, TLS, EHLO, STARTTLS,
    /// AUTH.
    async fn open(&self) -> Result<AsyncSmtpConnection, Refusal> {
        let connect = |e: lettre::transport::smtp::Error| Refusal {
            stage: Stage::Connect,
            error: Cause::Smtp(e),
        };
        let io = |e: std::io::Error| Refusal {
            stage: Stage::Connect,
            error: Cause::Io(e),
        };
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.server.host.as_str(), self.server.port)),
        )
        .await
        .map_err(|_| timed_out(Stage::Connect))?
        .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let handshake = async {
            let stream: Box<dyn AsyncTokioStream> = match (&self.tls, self.server.security) {
                (Some(tls), Security::Implicit) => Box::new(TlsStream(
                    tls.implicit
                        .connect(tls.name.clone(), tcp)
                        .await
                        .map_err(io)?,
                )),
                _ => Box::new(tcp),
            };
            let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
                .await
                .map_err(connect)?;
            match (&self.tls, self.server.security) {
                (Some(tls), Security::StartTls) => conn
                    .starttls(tls.starttls.clone(), &self.hello)
                    .await
                    .map_err(connect)?,
                (Some(tls), Security::Opportunistic) if conn.can_starttls() => conn
                    .starttls(tls.starttls.clone(), &self.hello)
                    .await
                    .map_err(connect)?,
                _ => {}
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(connect)?;
            }
            Ok(conn)
        };
        tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| timed_out(Stage::Connect))?
    }

    /// An idle connection (most recent first), or a new one.
    async fn take(&self) -> Result<Conn, Refusal> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match idle {
                Some(i) if i.since.elapsed() <= IDLE_LIMIT && !i.conn.has_broken() => {
                    return Ok(Conn {
                        conn: i.conn,
                        reused: true,
                    })
                }
                Some(i) => close(i.conn),
                None => break,
            }
        }
        Ok(Conn {
            conn: self.open().await?,
            reused: false,
        })
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Idle {
                conn,
                since: Instant::now(),
            });
    }

    /// One message on one connection: `MAIL`, `RCPT`, `DATA`, the body.
    async fn exchange(
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let at = |stage: Stage| {
            move |e| Refusal {
                stage,
                error: Cause::Smtp(e),
            }
        };
        let mut params = Vec::new();
        if !body.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(Refusal {
                    stage: Stage::Mail,
                    error: Cause::Unsupported("the message is 8-bit and the server lacks 8BITMIME"),
                });
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let non_ascii = envelope
            .to()
            .iter()
            .chain(envelope.from())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(Refusal {
                    stage: Stage::Mail,
                    error: Cause::Unsupported("a non-ASCII address and the server lacks SMTPUTF8"),
                });
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        conn.command(Mail::new(envelope.from().cloned(), params))
            .await
            .map_err(at(Stage::Mail))?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), Vec::new()))
                .await
                .map_err(at(Stage::Rcpt))?;
        }
        conn.command(Data).await.map_err(at(Stage::Data))?;
        conn.message(body).await.map_err(at(Stage::Body))?;
        Ok(())
    }

    /// Sends on a connection of the pool; the connection goes back unless
    /// it broke.
    async fn send(&self, envelope: &Envelope, body: &[u8]) -> Result<(), Refusal> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Refusal {
                stage: Stage::Connect,
                error: Cause::Io(std::io::Error::other("the SMTP pool is closed")),
            })?;
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let Conn { mut conn, reused } = self.take().await?;
            let sent =
                tokio::time::timeout(self.timeout, Self::exchange(&mut conn, envelope, body)).await;
            match sent {
                Ok(Ok(())) => {
                    self.put_back(conn);
                    break Ok(());
                }
                Ok(Err(refusal)) if refusal.error.status().is_some() => {
                    // A refusal: the dialogue is intact; reset it.
                    let stale = reused && tries == 1 && refusal.stale();
                    if !stale
                        && tokio::time::timeout(self.timeout, conn.command(Rset))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    {
                        self.put_back(conn);
                    } else {
                        close(conn);
                    }
                    if stale {
                        continue;
                    }
                    break Err(refusal);
                }
                Ok(Err(refusal)) => {
                    let stale = reused && tries == 1 && refusal.stale();
                    close(conn);
                    if stale {
                        continue;
                    }
                    break Err(refusal);
                }
                Err(_) => {
                    // Where it stood is unknown: the connection is done.
                    close(conn);
                    break Err(timed_out(Stage::Body));
                }
            }
        };
        drop(permit);
        result
    }
}

/// Says goodbye on a connection that is not kept, without waiting.
fn close(mut conn: AsyncSmtpConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.quit()).await;
        });
    }
}

impl Provider for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        _attempt: Attempt,
    ) -> BoxFuture<'a, Result<Delivered, Failure>> {
        Box::pin(async move {
            let email = self.inner.composer.compose(message)?;
            let envelope = email.envelope().clone();
            let to = envelope
                .to()
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let body = email.formatted();
            match self.inner.send(&envelope, &body).await {
                Ok(()) => Ok(Delivered::new(format!("250 from {}", self.inner.server))),
                Err(refusal) => Err(refusal.failure(&self.inner.server, &to)),
            }
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let conn = self.inner.open().await.map_err(|r| Error::Unreachable {
                server: self.inner.server.to_string(),
                reason: match r.error.status() {
                    Some(code) => format!("it answered {code}: {}", r.error.detail()),
                    None => r.error.detail(),
                },
            })?;
            self.inner.put_back(conn);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_reads_in_words() {
        let detail = Cause::Io(std::io::Error::from_raw_os_error(111)).detail();
        assert!(!detail.contains("os error"), "{detail}");
        assert!(!detail.is_empty());
    }

    #[test]
    fn urls_give_host_port_and_security() {
        let s = Server::parse("smtp://mail.example:2525").expect("plain");
        assert_eq!(
            (s.host.as_str(), s.port, s.security, s.hello),
            ("mail.example", 2525, Security::Plain, None)
        );
        let s = Server::parse("smtp://mail.example?tls=required").expect("starttls");
        assert_eq!((s.port, s.security), (587, Security::StartTls));
        let s = Server::parse("smtp://mail.example:25?tls=opportunistic").expect("opp");
        assert_eq!((s.port, s.security), (25, Security::Opportunistic));
        let s = Server::parse("smtps://mail.example").expect("implicit");
        assert_eq!((s.port, s.security), (465, Security::Implicit));
        let s = Server::parse("smtp://127.0.0.1:25/sender.shop.example").expect("hello");
        assert_eq!(s.hello.as_deref(), Some("sender.shop.example"));
        assert_eq!(s.to_string(), "127.0.0.1:25");
        let s = Server::parse("smtp://[::1]:25").expect("v6");
        assert_eq!(s.to_string(), "[::1]:25");
        assert_eq!(Server::parse("smtp://localhost").expect("default").port, 25);
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for (url, says) in [
            ("http://mail.example", "scheme"),
            ("smtp://user:hunter2@mail.example", "username_env"),
            ("smtp://mail.example?tls=yes", "tls=yes"),
            ("smtps://mail.example?tls=required", "drop the `tls`"),
            ("smtp://mail.example?pool=3", "unknown parameter"),
            ("mail.example:25", "scheme"),
        ] {
            let e = Server::parse(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn enhanced_codes_are_read_from_the_answer() {
        assert_eq!(enhanced("5.1.1 <bob@x> User unknown"), Some((5, 1, 1)));
        assert_eq!(enhanced("User unknown"), None);
        assert_eq!(enhanced("5.1 x"), None);
    }

    #[test]
    fn recipient_refusals_are_bounces_but_policy_and_sender_ones_are_not() {
        assert!(is_bounce(Stage::Rcpt, "5.1.1 User unknown"));
        assert!(is_bounce(Stage::Rcpt, "No such user here"));
        assert!(is_bounce(Stage::Rcpt, "5.2.1 Mailbox disabled"));
        assert!(!is_bounce(Stage::Rcpt, "5.7.1 Relaying denied"));
        assert!(!is_bounce(Stage::Rcpt, "5.1.8 Bad sender's system address"));
        assert!(is_bounce(Stage::Body, "5.1.1 Recipient unknown"));
        assert!(!is_bounce(Stage::Body, "5.7.1 Message rejected as spam"));
        assert!(!is_bounce(Stage::Body, "Message rejected"));
        assert!(!is_bounce(Stage::Mail, "5.1.1 whatever"));
        assert!(!is_bounce(Stage::Connect, "5.1.1 whatever"));
    }

    #[test]
    fn reasons_never_quote_an_address_and_stay_short() {
        assert_eq!(
            scrub("5.1.1 <bob@example.com>: Recipient\r\n address rejected"),
            "5.1.1 <address> Recipient address rejected"
        );
        let long = "x ".repeat(500);
        assert!(scrub(&long).chars().count() <= REASON_CHARS + 1);
    }
}
