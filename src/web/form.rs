//! Form bodies, parsed strictly: `application/x-www-form-urlencoded` only, at most
//! `REQUEST_BODY_BYTES_MAX`, valid percent-encoding and UTF-8, no NUL, no duplicated field —
//! and the CSRF check (synchronizer token, plus `Origin`/`Sec-Fetch-Site` when present).

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::context::{RequestContext, SessionState, cookie};
use super::error::render_error;
use crate::audit::AuditEvent;
use crate::limits::REQUEST_BODY_BYTES_MAX;
use crate::services::Services;

/// Cookie holding the CSRF token of visitors' forms (sign-up, login): double-submit.
pub const VISITOR_CSRF_COOKIE: &str = "__Host-alphabank-csrf";
/// Form fields per request.
pub const FORM_FIELDS_MAX: usize = 32;

/// A parsed form whose CSRF token was checked.
#[derive(Debug)]
pub struct CsrfForm {
    fields: Vec<(String, String)>,
}

impl CsrfForm {
    /// A form the server fills itself (a reviewed transfer shown again as its form).
    pub(super) fn from_fields(fields: Vec<(String, String)>) -> Self {
        CsrfForm { fields }
    }

    /// The field's value, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub fn opt(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FormError {
    Syntax(&'static str),
}

/// Strict `application/x-www-form-urlencoded` parsing.
pub fn parse_urlencoded(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    if body.is_empty() {
        return Ok(fields);
    }
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &b""[..]),
        };
        let decode = |raw: &[u8]| -> Result<String, FormError> {
            if raw.windows(1).any(|w| w == b"%") {
                // Every % must start a valid escape.
                let mut i = 0;
                while let Some(&b) = raw.get(i) {
                    if b == b'%' {
                        let ok = raw
                            .get(i + 1..i + 3)
                            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                        if !ok {
                            return Err(FormError::Syntax(
                                "The form was sent with a broken encoding.",
                            ));
                        }
                        i += 3;
                    } else {
                        i += 1;
                    }
                }
            }
            let plus: Vec<u8> = raw
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
            let text = String::from_utf8(bytes).map_err(|_| {
                FormError::Syntax("The form contains text that is not valid UTF-8.")
            })?;
            if text.contains('\0') {
                return Err(FormError::Syntax("The form contains a NUL character."));
            }
            Ok(text)
        };
        let name = decode(name)?;
        let value = decode(value)?;
        if fields.iter().any(|(k, _)| *k == name) {
            return Err(FormError::Syntax("A field was sent twice."));
        }
        if fields.len() >= FORM_FIELDS_MAX {
            return Err(FormError::Syntax("The form has too many fields."));
        }
        fields.push((name, value));
    }
    Ok(fields)
}

fn same_origin(request: &Request, plain_http: bool) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if origin == "null" {
        // `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on their own form
        // posts; believe it only together with the browser's own `Sec-Fetch-Site: same-origin`.
        return headers
            .get("sec-fetch-site")
            .is_some_and(|v| v == "same-origin");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else { return false };
    origin == format!("https://{host}") || (plain_http && origin == format!("http://{host}"))
}

impl FromRequest<Services> for CsrfForm {
    type Rejection = Response;

    async fn from_request(request: Request, services: &Services) -> Result<Self, Response> {
        let context = request.extensions().get::<RequestContext>().cloned();
        let request_id = context
            .as_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default();
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !is_form {
            return Err(render_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Forms must be sent as application/x-www-form-urlencoded.",
                &request_id,
            ));
        }
        let origin_ok = same_origin(&request, services.config.plain_http);
        let visitor_cookie = cookie(request.headers(), VISITOR_CSRF_COOKIE).map(str::to_string);
        let path = request.uri().path().to_string();
        let body = axum::body::to_bytes(request.into_body(), REQUEST_BODY_BYTES_MAX)
            .await
            .map_err(|_| {
                render_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The form is too large.",
                    &request_id,
                )
            })?;
        let fields = parse_urlencoded(&body).map_err(|FormError::Syntax(m)| {
            render_error(StatusCode::BAD_REQUEST, m, &request_id)
        })?;
        let form = CsrfForm { fields };
        let sent = form.get("csrf_token");
        let expected = match context.as_ref().map(|c| &c.session) {
            Some(SessionState::Live(session)) => Some(session.csrf_token.clone()),
            _ => visitor_cookie,
        };
        let token_ok = expected.is_some_and(|e| {
            !sent.is_empty() && crate::crypto::constant_time_eq(e.as_bytes(), sent.as_bytes())
        });
        if !(origin_ok && token_ok) {
            if let Some(context) = &context {
                services
                    .audit
                    .record_best_effort(
                        &context.audit(),
                        AuditEvent::CsrfRejected {
                            path: AuditEvent::path(&path),
                        },
                    )
                    .await;
            }
            return Err(render_error(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from AlphaBank. Go back, reload the page and try again.",
                &request_id,
            ));
        }
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            parse_urlencoded(b"a=1&b=x+y%21").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "x y!".into())]
        );
        assert_eq!(parse_urlencoded(b"a=%C3%A6").unwrap()[0].1, "æ");
        assert!(parse_urlencoded(b"a=1&a=2").is_err());
        assert!(parse_urlencoded(b"a=%ff").is_err());
        assert!(parse_urlencoded(b"a=%zz").is_err());
        assert!(parse_urlencoded(b"a=%4").is_err());
        assert!(parse_urlencoded(b"a=x%00y").is_err());
        assert!(parse_urlencoded(b"").unwrap().is_empty());
    }
}
