//! Token authentication: every call carries the server's token, as a bearer token or as the
//! password of HTTP Basic (what JDBC's `user`/`password` and ADBC's `username`/`password`
//! send to the handshake, which answers with the bearer token to use from then on).

use std::sync::Arc;

use base64::Engine;
use base64::prelude::BASE64_STANDARD_NO_PAD;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key credentials travel in.
pub(super) const AUTHORIZATION: &str = "authorization";

/// Who may call the server: anyone (no token configured), or callers that present the token.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Auth {
    /// Every caller is let in.
    pub fn open() -> Self {
        Self { token: None }
    }

    /// Only callers presenting `token` are let in.
    pub fn token(token: &str) -> Self {
        Self {
            token: Some(Arc::from(token)),
        }
    }

    /// Whether a token is required.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// The bearer token the handshake hands out, if one is required.
    pub(super) fn bearer(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Checks the credentials in `metadata`.
    ///
    /// # Errors
    /// `Unauthenticated` when a token is required and none, or the wrong one, was sent.
    pub(super) fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let Some(header) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "this Flight SQL server requires a token: send the header 'authorization: Bearer <token>', or log in with any user name and the token as password",
            ));
        };
        let header = header
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let presented = if let Some(bearer) = strip_scheme(header, "Bearer") {
            bearer.as_bytes().to_vec()
        } else if let Some(basic) = strip_scheme(header, "Basic") {
            // Padded (RFC 7617) or not (Go's Flight client sends it without padding).
            let unpadded = basic.trim().trim_end_matches('=');
            let decoded = BASE64_STANDARD_NO_PAD.decode(unpadded).map_err(|_| {
                Status::unauthenticated("the Basic credentials are not base64 of 'user:password'")
            })?;
            match decoded.iter().position(|&b| b == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => {
                    return Err(Status::unauthenticated(
                        "the Basic credentials are not 'user:password'",
                    ));
                }
            }
        } else {
            return Err(Status::unauthenticated(
                "the authorization header is neither 'Bearer <token>' nor 'Basic <credentials>'",
            ));
        };
        if same(presented.as_slice(), token.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the token is wrong"))
        }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// `header` without its case-insensitive `scheme` and the space after it.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (head, rest) = header.split_at_checked(scheme.len())?;
    if head.eq_ignore_ascii_case(scheme) {
        rest.strip_prefix(' ')
    } else {
        None
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine;
    use base64::prelude::BASE64_STANDARD;
    use tonic::metadata::MetadataMap;

    use super::Auth;

    fn with(header: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", header.parse().unwrap());
        metadata
    }

    #[test]
    fn the_token_is_checked_as_bearer_or_basic_password() {
        let auth = Auth::token("s3cret");
        assert!(auth.check(&MetadataMap::new()).is_err());
        assert!(auth.check(&with("Bearer s3cret")).is_ok());
        assert!(auth.check(&with("bearer s3cret")).is_ok());
        assert!(auth.check(&with("Bearer s3cre")).is_err());
        assert!(auth.check(&with("Bearer s3cret2")).is_err());
        let basic = |creds: &str| format!("Basic {}", BASE64_STANDARD.encode(creds));
        assert!(auth.check(&with(&basic("alice:s3cret"))).is_ok());
        // Without padding, as Go's Flight client (ADBC) sends it.
        let unpadded = format!(
            "Basic {}",
            base64::prelude::BASE64_STANDARD_NO_PAD.encode("bob:s3cret")
        );
        assert!(unpadded.len() < basic("bob:s3cret").len());
        assert!(auth.check(&with(&unpadded)).is_ok());
        assert!(auth.check(&with(&basic("alice:wrong"))).is_err());
        assert!(auth.check(&with(&basic("s3cret"))).is_err());
        assert!(auth.check(&with("Token s3cret")).is_err());
        assert!(Auth::open().check(&MetadataMap::new()).is_ok());
    }
}
