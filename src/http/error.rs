//! One error shape for every endpoint: `{"error": {"code", "message", "field"}}` with a 4xx status that
//! says whose fault it is, so shop engineers can handle failures by code.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::app::AppError;
use crate::error::Invalid;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `missing_field`, `invalid_phone`, `forbidden`, `conflict`…
    pub code: String,
    pub message: String,
    /// The offending field as a path (`lines[2].quantity`), when one is to blame.
    pub field: Option<String>,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "this key's role may not do that")
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        let field = (!e.field.is_empty()).then_some(e.field);
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code: e.code.to_string(), message: e.message, field }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it has been logged")
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, field: self.field } };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body whose errors name the field: malformed JSON is 400, a wrong type or a missing field is 422
/// with the path of the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", e.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserialize with the failing field's path in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(path_error)
}

/// The error for a body, or for a value already parsed as JSON (the elements of a batch).
pub fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {inner}"),
        );
    }
    let msg = inner.to_string();
    // serde reports a missing field at its parent; name the field itself.
    let (code, field) = match msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        Some(name) if path == "." => ("missing_field", name.to_string()),
        Some(name) => ("missing_field", format!("{path}.{name}")),
        None if msg.starts_with("unknown field") => ("unknown_field", path),
        None => ("invalid_field", path),
    };
    let message = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: i64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        order_no: String,
        lines: Vec<Line>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Order>(br#"{"order_no": "A", "lines": [{"sku": "x", "quantity": "two"}]}"#).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("lines[0].quantity"))
        );
        let e = parse_json::<Order>(br#"{"lines": []}"#).unwrap_err();
        assert_eq!((e.code.as_str(), e.field.as_deref()), ("missing_field", Some("order_no")));
        let e = parse_json::<Order>(br#"{"order_no": "A", "lines": [{"sku": "x"}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("lines[0].quantity"));
        let e = parse_json::<Order>(b"{not json").unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "malformed_json"));
    }
}
