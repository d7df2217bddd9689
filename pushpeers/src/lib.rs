//! Local stand-ins for the push services, for tests and benchmarks only:
//! an FCM peer (the OAuth token endpoint and the HTTP v1 send endpoint,
//! HTTP/1.1) and an APNs peer (HTTP/2 only, h2c with prior knowledge), each
//! on 127.0.0.1, each checking what sluice sends the way the real services
//! do: the JWTs' signatures with the public key the test generated, their
//! claims and headers, the access token on every send, the APNs headers.
//!
//! A peer plays the answers a test scripts: a token that is unregistered
//! (FCM `UNREGISTERED`, APNs 410 `Unregistered` or 400 `BadDeviceToken`),
//! an invalid one (`INVALID_ARGUMENT`), a 401 that revokes the access token
//! in use, an APNs 403 `ExpiredProviderToken`, a 429 with `Retry-After`.
//! Every check that fails is answered as the service would (400, 401, 403)
//! and recorded in `problems`, which a test asserts empty.
//!
//! Knows nothing of sluice: only the wire formats of FCM and APNs.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

/// The OAuth scope FCM HTTP v1 needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The OAuth grant type of a service account's JWT.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

type Answer = Response<Full<Bytes>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds since the Unix epoch (the peers stand for services on the wall
/// clock).
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn answer(status: StatusCode, body: &Value, headers: &[(&str, String)]) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

// ------------------------------------------------------------------ keys

/// An RSA key of a made-up service account.
pub struct RsaKey {
    /// PKCS#8 PEM, as in a service account's `private_key`.
    pub private_pem: String,
    /// Verifies RS256 signatures made with the key.
    pub public: DecodingKey,
}

impl RsaKey {
    /// A fresh 2048-bit key.
    pub fn generate() -> RsaKey {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
        let public =
            DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be());
        RsaKey {
            private_pem,
            public,
        }
    }
}

/// A P-256 key, as Apple's `.p8` token signing keys are.
pub struct EcKey {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the `.p8` file's text.
    pub private_pem: String,
    /// Verifies ES256 signatures made with the key.
    pub public: DecodingKey,
}

impl EcKey {
    pub fn generate() -> EcKey {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
            .expect("P-256 key pair");
        let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        EcKey {
            private_pem,
            public: DecodingKey::from_ec_der(pair.public_key().as_ref()),
        }
    }
}

// ------------------------------------------------------------ the server

/// A server on 127.0.0.1 in a thread of its own; stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start<F, Fut>(h2: bool, handle: F) -> Server
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("peer runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok((s, _)) => s,
                            Err(_) => continue,
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let io = TokioIo::new(stream);
                        let svc = hyper::service::service_fn(move |req| {
                            let handle = handle.clone();
                            async move { Ok::<_, Infallible>(handle(req).await) }
                        });
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .max_concurrent_streams(1000)
                                .serve_connection(io, svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .await;
                        }
                    });
                }
            });
        });
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bearer(req: &Request<Incoming>, scheme: &str) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (s, token) = v.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| token.to_owned())
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn body(req: Request<Incoming>) -> Vec<u8> {
    match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    }
}

// ------------------------------------------------------------------- FCM

/// A message the FCM peer took.
#[derive(Debug, Clone)]
pub struct FcmSent {
    pub token: String,
    /// The whole `message` object of the request.
    pub message: Value,
}

/// What the FCM peer saw and what it is scripted to answer.
#[derive(Debug, Default)]
pub struct FcmState {
    /// Access tokens handed out, in order.
    pub issued: Vec<String>,
    /// Access tokens no longer accepted (after a scripted 401).
    pub revoked: HashSet<String>,
    /// Messages taken (200).
    pub sent: Vec<FcmSent>,
    /// Send requests received, whatever the answer.
    pub requests: usize,
    /// Tokens answered 404 `UNREGISTERED`.
    pub unregistered: HashSet<String>,
    /// Tokens answered 400 `INVALID_ARGUMENT`.
    pub invalid: HashSet<String>,
    /// The next this many sends are answered 401 and revoke the access
    /// token they carried.
    pub reject_auth: usize,
    /// The next this many sends are answered 429 with `Retry-After`.
    pub throttle: usize,
    pub retry_after_secs: u64,
    /// Tokens answered 503 `UNAVAILABLE` (with `Retry-After`) this many
    /// more times.
    pub flaky: HashMap<String, usize>,
    /// The next this many token requests are answered 503.
    pub token_unavailable: usize,
    /// The access tokens' lifetime (`expires_in`).
    pub expires_in: u64,
    /// Checks that failed (a test asserts this empty).
    pub problems: Vec<String>,
}

struct FcmShared {
    project_id: String,
    client_email: String,
    key_id: String,
    token_url: String,
    key: DecodingKey,
    state: Mutex<FcmState>,
}

/// The FCM stand-in: `POST /token` (Google's OAuth endpoint for a service
/// account's JWT) and `POST /v1/projects/{project_id}/messages:send`.
pub struct FcmPeer {
    server: Server,
    shared: Arc<FcmShared>,
    key: RsaKey,
}

impl FcmPeer {
    /// A peer for project `project_id`, with a fresh service account key.
    pub fn start(project_id: &str) -> FcmPeer {
        let key = RsaKey::generate();
        // The token URL must be known before the server starts (it is the
        // JWT's audience): the shared state is filled in once the address
        // is known.
        let cell: Arc<Mutex<Option<Arc<FcmShared>>>> = Arc::new(Mutex::new(None));
        let c2 = Arc::clone(&cell);
        let server = Server::start(false, move |req| {
            let shared = lock(&c2).clone();
            async move {
                match shared {
                    Some(s) => fcm_handle(s, req).await,
                    None => answer(StatusCode::SERVICE_UNAVAILABLE, &json!({}), &[]),
                }
            }
        });
        let shared = Arc::new(FcmShared {
            project_id: project_id.to_owned(),
            client_email: format!("sluice@{project_id}.iam.gserviceaccount.com"),
            key_id: "peer-key-1".into(),
            token_url: format!("http://{}/token", server.addr),
            key: key.public.clone(),
            state: Mutex::new(FcmState {
                expires_in: 3600,
                retry_after_secs: 1,
                ..FcmState::default()
            }),
        });
        *lock(&cell) = Some(Arc::clone(&shared));
        FcmPeer {
            server,
            shared,
            key,
        }
    }

    /// `http://127.0.0.1:port`: the channel's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn token_url(&self) -> &str {
        &self.shared.token_url
    }

    pub fn client_email(&self) -> &str {
        &self.shared.client_email
    }

    /// A service account JSON as the Firebase console gives it, pointing
    /// `token_uri` at this peer.
    pub fn service_account(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": self.shared.project_id,
            "private_key_id": self.shared.key_id,
            "private_key": self.key.private_pem,
            "client_email": self.shared.client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.shared.token_url,
        })
        .to_string()
    }

    /// The peer's state, to script it or to read what it saw.
    pub fn state(&self) -> MutexGuard<'_, FcmState> {
        lock(&self.shared.state)
    }
}

fn fcm_error(status: StatusCode, code: &str, message: &str, error_code: Option<&str>) -> Answer {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": code,
    });
    if let Some(e) = error_code {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": e,
        }]);
    }
    answer(status, &json!({ "error": error }), &[])
}

async fn fcm_handle(shared: Arc<FcmShared>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    if req.method() != hyper::Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, &json!({}), &[]);
    }
    if path == "/token" {
        let form = body(req).await;
        return fcm_token(&shared, &form);
    }
    let Some(project) = path
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/messages:send"))
    else {
        lock(&shared.state)
            .problems
            .push(format!("unknown path {path}"));
        return fcm_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such path", None);
    };
    let auth = bearer(&req, "Bearer");
    let content_type = header(&req, "content-type").unwrap_or_default();
    let bytes = body(req).await;
    let mut st = lock(&shared.state);
    st.requests += 1;
    if project != shared.project_id {
        st.problems.push(format!("send to project {project}"));
        return fcm_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such project", None);
    }
    if !content_type.starts_with("application/json") {
        st.problems.push(format!("content-type {content_type:?}"));
    }
    let Some(auth) = auth else {
        st.problems.push("a send without a bearer token".into());
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "no token",
            None,
        );
    };
    if !st.issued.contains(&auth) || st.revoked.contains(&auth) {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        );
    }
    if st.reject_auth > 0 {
        st.reject_auth -= 1;
        st.revoked.insert(auth);
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        );
    }
    if st.throttle > 0 {
        st.throttle -= 1;
        let mut a = fcm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded.",
            Some("QUOTA_EXCEEDED"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&st.retry_after_secs.to_string()) {
            a.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return a;
    }
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = parsed.get("message").cloned().unwrap_or(Value::Null);
    let Some(token) = message
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        st.problems
            .push(format!("a send without message.token: {parsed}"));
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "no token",
            Some("INVALID_ARGUMENT"),
        );
    };
    if let Some(data) = message.get("data").and_then(Value::as_object) {
        if let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string()) {
            st.problems.push(format!("data.{k} is not a string"));
            return fcm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "data values must be strings",
                Some("INVALID_ARGUMENT"),
            );
        }
    }
    if let Some(n) = st.flaky.get_mut(&token).filter(|n| **n > 0) {
        *n -= 1;
        let mut a = fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            Some("UNAVAILABLE"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&st.retry_after_secs.to_string()) {
            a.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return a;
    }
    if st.unregistered.contains(&token) {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        );
    }
    if st.invalid.contains(&token) {
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        );
    }
    let n = st.sent.len();
    st.sent.push(FcmSent { token, message });
    answer(
        StatusCode::OK,
        &json!({ "name": format!("projects/{}/messages/{n}", shared.project_id) }),
        &[],
    )
}

/// Google's token endpoint: checks the service account's JWT and hands
/// out an access token.
fn fcm_token(shared: &FcmShared, form: &[u8]) -> Answer {
    let form = String::from_utf8_lossy(form);
    let fields: HashMap<&str, &str> = form
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let grant = fields
        .get("grant_type")
        .map(|g| g.replace("%3A", ":").replace("%3a", ":"));
    let mut st = lock(&shared.state);
    if st.token_unavailable > 0 {
        st.token_unavailable -= 1;
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "backend_error"}),
            &[("retry-after", "2".into())],
        );
    }
    let refuse = |st: &mut FcmState, why: String| {
        st.problems.push(why.clone());
        answer(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_grant", "error_description": why}),
            &[],
        )
    };
    if grant.as_deref() != Some(JWT_BEARER) {
        return refuse(&mut st, format!("grant_type {grant:?}"));
    }
    let Some(assertion) = fields.get("assertion") else {
        return refuse(&mut st, "no assertion".into());
    };
    match check_service_account_jwt(shared, assertion) {
        Ok(()) => {}
        Err(why) => return refuse(&mut st, why),
    }
    let token = format!("ya29.peer-{}", st.issued.len() + 1);
    st.issued.push(token.clone());
    answer(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": st.expires_in, "token_type": "Bearer"}),
        &[],
    )
}

#[derive(serde::Deserialize)]
struct ServiceAccountClaims {
    iat: i64,
    exp: i64,
    scope: String,
}

fn check_service_account_jwt(shared: &FcmShared, jwt: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("JWT header: {e}"))?;
    if header.alg != Algorithm::RS256 {
        return Err(format!("JWT alg {:?}, not RS256", header.alg));
    }
    if header.kid.as_deref() != Some(shared.key_id.as_str()) {
        return Err(format!("JWT kid {:?}", header.kid));
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[&shared.token_url]);
    v.set_issuer(&[&shared.client_email]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let data = jsonwebtoken::decode::<ServiceAccountClaims>(jwt, &shared.key, &v)
        .map_err(|e| format!("JWT refused: {e}"))?;
    let c = data.claims;
    if !c.scope.split(' ').any(|s| s == FCM_SCOPE) {
        return Err(format!("JWT scope {:?}", c.scope));
    }
    if c.exp - c.iat > 3600 || c.exp <= c.iat {
        return Err(format!("JWT lifetime {} s", c.exp - c.iat));
    }
    let now = unix_now();
    if (c.iat - now).abs() > 300 {
        return Err(format!("JWT iat {} is {} s from now", c.iat, c.iat - now));
    }
    Ok(())
}

// ------------------------------------------------------------------ APNs

/// A notification the APNs peer took.
#[derive(Debug, Clone)]
pub struct ApnsSent {
    pub token: String,
    pub apns_id: String,
    pub collapse_id: Option<String>,
    pub push_type: String,
    pub priority: Option<String>,
    pub payload: Value,
    /// The provider token (JWT) it came with.
    pub jwt: String,
}

/// What the APNs peer saw and what it is scripted to answer.
#[derive(Debug, Default)]
pub struct ApnsState {
    /// Notifications taken (kept only while `keep` is true).
    pub sent: Vec<ApnsSent>,
    /// Notifications taken, counted even when not kept.
    pub accepted: u64,
    /// Requests received, whatever the answer.
    pub requests: u64,
    /// Whether to keep each notification (benchmarks turn it off).
    pub keep: bool,
    /// Tokens answered 410 `Unregistered`.
    pub unregistered: HashSet<String>,
    /// Tokens answered 400 `BadDeviceToken`.
    pub bad: HashSet<String>,
    /// The next this many requests are answered 403
    /// `ExpiredProviderToken`, and the JWT they carried is refused from
    /// then on.
    pub expire: usize,
    /// The next this many requests are answered 429 with `Retry-After`.
    pub throttle: usize,
    pub retry_after_secs: u64,
    /// Provider tokens seen and found good.
    pub jwts: Vec<String>,
    /// Provider tokens refused from now on.
    pub expired: HashSet<String>,
    /// Checks that failed (a test asserts this empty).
    pub problems: Vec<String>,
}

struct ApnsShared {
    team_id: String,
    key_id: String,
    topic: String,
    key: DecodingKey,
    state: Mutex<ApnsState>,
}

/// The APNs stand-in: `POST /3/device/{token}` over HTTP/2 (h2c: a client
/// must speak HTTP/2 with prior knowledge, HTTP/1.1 is refused).
pub struct ApnsPeer {
    server: Server,
    shared: Arc<ApnsShared>,
    key: EcKey,
}

/// The key id and team id the APNs peer expects.
pub const APNS_KEY_ID: &str = "PEERKEY123";
pub const APNS_TEAM_ID: &str = "PEERTEAM45";

impl ApnsPeer {
    /// A peer for the app `topic`, with a fresh signing key.
    pub fn start(topic: &str) -> ApnsPeer {
        let key = EcKey::generate();
        let shared = Arc::new(ApnsShared {
            team_id: APNS_TEAM_ID.into(),
            key_id: APNS_KEY_ID.into(),
            topic: topic.to_owned(),
            key: key.public.clone(),
            state: Mutex::new(ApnsState {
                keep: true,
                retry_after_secs: 1,
                ..ApnsState::default()
            }),
        });
        let s2 = Arc::clone(&shared);
        let server = Server::start(true, move |req| apns_handle(Arc::clone(&s2), req));
        ApnsPeer {
            server,
            shared,
            key,
        }
    }

    /// `http://127.0.0.1:port`: the channel's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The `.p8` key's text, for the env var `credentials_env` names.
    pub fn key_pem(&self) -> &str {
        &self.key.private_pem
    }

    pub fn state(&self) -> MutexGuard<'_, ApnsState> {
        lock(&self.shared.state)
    }
}

fn apns_error(status: StatusCode, reason: &str) -> Answer {
    let mut body = json!({ "reason": reason });
    if status == StatusCode::GONE {
        body["timestamp"] = json!(unix_now() * 1000);
    }
    answer(status, &body, &[])
}

/// Whether `s` is a UUID in its canonical 8-4-4-4-12 form.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(serde::Deserialize)]
struct ProviderClaims {
    iat: i64,
}

fn check_provider_jwt(shared: &ApnsShared, jwt: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("JWT header: {e}"))?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("JWT alg {:?}, not ES256", header.alg));
    }
    if header.kid.as_deref() != Some(shared.key_id.as_str()) {
        return Err(format!("JWT kid {:?}", header.kid));
    }
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.set_required_spec_claims(&["iss"]);
    v.set_issuer(&[&shared.team_id]);
    let data = jsonwebtoken::decode::<ProviderClaims>(jwt, &shared.key, &v)
        .map_err(|e| format!("JWT refused: {e}"))?;
    let age = unix_now() - data.claims.iat;
    // Apple refuses tokens older than an hour, and ones from the future.
    if !(-60..=3600).contains(&age) {
        return Err(format!("JWT iat is {age} s old"));
    }
    Ok(())
}

async fn apns_handle(shared: Arc<ApnsShared>, req: Request<Incoming>) -> Answer {
    if req.version() != hyper::Version::HTTP_2 {
        lock(&shared.state)
            .problems
            .push(format!("{:?} request", req.version()));
        return apns_error(StatusCode::BAD_REQUEST, "BadProtocol");
    }
    let path = req.uri().path().to_owned();
    let Some(token) = path.strip_prefix("/3/device/").map(str::to_owned) else {
        lock(&shared.state)
            .problems
            .push(format!("unknown path {path}"));
        return apns_error(StatusCode::NOT_FOUND, "BadPath");
    };
    if req.method() != hyper::Method::POST {
        return apns_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    }
    let jwt = bearer(&req, "bearer");
    let topic = header(&req, "apns-topic");
    let push_type = header(&req, "apns-push-type");
    let apns_id = header(&req, "apns-id");
    let collapse_id = header(&req, "apns-collapse-id");
    let priority = header(&req, "apns-priority");
    let bytes = body(req).await;
    let Some(jwt) = jwt else {
        lock(&shared.state)
            .problems
            .push("no provider token".into());
        return apns_error(StatusCode::FORBIDDEN, "MissingProviderToken");
    };
    let known = {
        let st = lock(&shared.state);
        if st.expired.contains(&jwt) {
            return apns_error(StatusCode::FORBIDDEN, "ExpiredProviderToken");
        }
        st.jwts.contains(&jwt)
    };
    // Verifying a signature costs; a token once verified is remembered
    // (as Apple does: one token is valid for up to an hour).
    if !known {
        if let Err(why) = check_provider_jwt(&shared, &jwt) {
            lock(&shared.state).problems.push(why);
            return apns_error(StatusCode::FORBIDDEN, "InvalidProviderToken");
        }
    }
    let mut st = lock(&shared.state);
    st.requests += 1;
    if !known && !st.jwts.contains(&jwt) {
        st.jwts.push(jwt.clone());
    }
    if topic.as_deref() != Some(shared.topic.as_str()) {
        st.problems.push(format!("apns-topic {topic:?}"));
        return apns_error(StatusCode::BAD_REQUEST, "MissingTopic");
    }
    let Some(push_type) = push_type.filter(|t| t == "alert" || t == "background") else {
        st.problems.push("apns-push-type missing".into());
        return apns_error(StatusCode::BAD_REQUEST, "InvalidPushType");
    };
    let apns_id = match apns_id {
        Some(id) if is_uuid(&id) => id,
        other => {
            st.problems.push(format!("apns-id {other:?}"));
            return apns_error(StatusCode::BAD_REQUEST, "BadMessageId");
        }
    };
    if collapse_id.as_ref().is_some_and(|c| c.len() > 64) {
        st.problems
            .push("apns-collapse-id longer than 64 bytes".into());
        return apns_error(StatusCode::BAD_REQUEST, "BadCollapseId");
    }
    let payload: Value = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            st.problems.push(format!("payload: {e}"));
            return apns_error(StatusCode::BAD_REQUEST, "PayloadEmpty");
        }
    };
    if payload.get("aps").and_then(Value::as_object).is_none() {
        st.problems.push(format!("payload without aps: {payload}"));
        return apns_error(StatusCode::BAD_REQUEST, "PayloadEmpty");
    }
    if bytes.len() > 4096 {
        return apns_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    if st.expire > 0 {
        st.expire -= 1;
        st.expired.insert(jwt);
        return apns_error(StatusCode::FORBIDDEN, "ExpiredProviderToken");
    }
    if st.throttle > 0 {
        st.throttle -= 1;
        let after = st.retry_after_secs.to_string();
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"reason": "TooManyRequests"}),
            &[("retry-after", after)],
        );
    }
    if st.unregistered.contains(&token) {
        return apns_error(StatusCode::GONE, "Unregistered");
    }
    if st.bad.contains(&token) {
        return apns_error(StatusCode::BAD_REQUEST, "BadDeviceToken");
    }
    st.accepted += 1;
    if st.keep {
        st.sent.push(ApnsSent {
            token,
            apns_id: apns_id.clone(),
            collapse_id,
            push_type,
            priority,
            payload,
            jwt,
        });
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&apns_id) {
        r.headers_mut().insert("apns-id", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn apns_shared(key: &EcKey) -> ApnsShared {
        ApnsShared {
            team_id: APNS_TEAM_ID.into(),
            key_id: APNS_KEY_ID.into(),
            topic: "t".into(),
            key: key.public.clone(),
            state: Mutex::new(ApnsState::default()),
        }
    }

    fn es256(key: &EcKey, kid: &str, iss: &str, iat: i64) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        let k = EncodingKey::from_ec_pem(key.private_pem.as_bytes()).expect("key");
        jsonwebtoken::encode(&h, &json!({"iss": iss, "iat": iat}), &k).expect("sign")
    }

    #[test]
    fn the_apns_peer_refuses_what_apple_refuses() {
        let key = EcKey::generate();
        let other = EcKey::generate();
        let s = apns_shared(&key);
        let now = unix_now();
        assert_eq!(
            check_provider_jwt(&s, &es256(&key, APNS_KEY_ID, APNS_TEAM_ID, now)),
            Ok(())
        );
        for (what, jwt) in [
            ("another key", es256(&other, APNS_KEY_ID, APNS_TEAM_ID, now)),
            ("another kid", es256(&key, "OTHERKEY12", APNS_TEAM_ID, now)),
            ("another team", es256(&key, APNS_KEY_ID, "OTHERTEAM1", now)),
            (
                "over an hour old",
                es256(&key, APNS_KEY_ID, APNS_TEAM_ID, now - 3700),
            ),
            (
                "from the future",
                es256(&key, APNS_KEY_ID, APNS_TEAM_ID, now + 600),
            ),
        ] {
            assert!(check_provider_jwt(&s, &jwt).is_err(), "{what} is refused");
        }
        assert!(is_uuid("0b5e2c1a-8d3f-8a1b-9c2d-3e4f5a6b7c8d"));
        assert!(!is_uuid("0b5e2c1a8d3f8a1b9c2d3e4f5a6b7c8d"));
    }

    #[test]
    fn the_fcm_peer_refuses_what_google_refuses() {
        let key = RsaKey::generate();
        let other = RsaKey::generate();
        let s = FcmShared {
            project_id: "p".into(),
            client_email: "sa@p.iam.gserviceaccount.com".into(),
            key_id: "kid-1".into(),
            token_url: "http://127.0.0.1:1/token".into(),
            key: key.public.clone(),
            state: Mutex::new(FcmState::default()),
        };
        let now = unix_now();
        let sign = |k: &RsaKey, kid: &str, claims: Value| {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(kid.into());
            let ek = EncodingKey::from_rsa_pem(k.private_pem.as_bytes()).expect("key");
            jsonwebtoken::encode(&h, &claims, &ek).expect("sign")
        };
        let claims = |iss: &str, scope: &str, aud: &str, iat: i64, exp: i64| json!({"iss": iss, "scope": scope, "aud": aud, "iat": iat, "exp": exp});
        let good = claims(&s.client_email, FCM_SCOPE, &s.token_url, now, now + 3600);
        assert_eq!(
            check_service_account_jwt(&s, &sign(&key, "kid-1", good.clone())),
            Ok(())
        );
        for (what, jwt) in [
            ("another key", sign(&other, "kid-1", good.clone())),
            ("another kid", sign(&key, "kid-2", good)),
            (
                "another issuer",
                sign(
                    &key,
                    "kid-1",
                    claims("x@y", FCM_SCOPE, &s.token_url, now, now + 3600),
                ),
            ),
            (
                "another scope",
                sign(
                    &key,
                    "kid-1",
                    claims(
                        &s.client_email,
                        "https://www.googleapis.com/auth/cloud-platform.read-only",
                        &s.token_url,
                        now,
                        now + 3600,
                    ),
                ),
            ),
            (
                "another audience",
                sign(
                    &key,
                    "kid-1",
                    claims(
                        &s.client_email,
                        FCM_SCOPE,
                        "https://oauth2.googleapis.com/token",
                        now,
                        now + 3600,
                    ),
                ),
            ),
            (
                "too long",
                sign(
                    &key,
                    "kid-1",
                    claims(&s.client_email, FCM_SCOPE, &s.token_url, now, now + 7200),
                ),
            ),
            (
                "expired",
                sign(
                    &key,
                    "kid-1",
                    claims(
                        &s.client_email,
                        FCM_SCOPE,
                        &s.token_url,
                        now - 7200,
                        now - 3600,
                    ),
                ),
            ),
        ] {
            assert!(
                check_service_account_jwt(&s, &jwt).is_err(),
                "{what} is refused"
            );
        }
    }
}
