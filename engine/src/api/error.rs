//! The API's errors and how each one is answered: a status and a JSON body
//! `{"error":"…"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Unavailable;

/// Why a request is refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden: a form posted from another site")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unknown user")]
    UnknownUser,
    /// Something named in the request does not exist (a journey).
    #[error("{0}")]
    Missing(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "unsupported content type `{0}`: send application/json, application/x-ndjson, application/jsonl or text/plain"
    )]
    ContentType(String),
    #[error("unsupported content encoding `{0}`: send the body as is or with gzip")]
    Encoding(String),
    #[error("invalid gzip body: {0}")]
    Gzip(String),
    #[error("request body not received within {0} ms")]
    Timeout(u128),
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Something the request named could not be fetched (an SNS
    /// certificate): the sender may try again.
    #[error("{0}")]
    BadGateway(String),
}

impl From<Unavailable> for Error {
    fn from(e: Unavailable) -> Self {
        Error::Unavailable(e.0)
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::NotFound | Error::UnknownUser | Error::Missing(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ContentType(_) | Error::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Gzip(_) | Error::Body(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}
