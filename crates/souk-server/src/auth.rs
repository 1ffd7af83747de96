//! Access tokens: signing (for `souk token` and token refresh) and verification.
//!
//! Verification tells apart every way a token can be wrong, because "invalid token" alone
//! sends a developer hunting: a malformed token, an unknown key, a bad signature, an
//! expired or not-yet-valid token each have their own code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::token::{Grants, Role, RoomClaims};

use crate::config::Keys;

/// Clock skew tolerated between the token issuer and this server.
pub const LEEWAY_SECS: u64 = 5;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a new token grants.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub ttl: Duration,
    pub grants: Option<Grants>,
    pub metadata: Option<String>,
    /// Grants chat (a user-scoped token when `room` is empty).
    pub chat: bool,
    /// Shops whose inbox the user answers for.
    pub shops: Vec<String>,
}

pub fn sign(
    api_key: &str,
    secret: &str,
    spec: &TokenSpec,
    now: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = RoomClaims {
        iss: api_key.to_owned(),
        sub: spec.identity.clone(),
        iat: now,
        nbf: Some(now.saturating_sub(LEEWAY_SECS)),
        exp: now + spec.ttl.as_secs(),
        room: spec.room.clone(),
        name: Some(spec.name.clone()),
        role: spec.role,
        grants: spec.grants,
        metadata: spec.metadata.clone(),
        chat: spec.chat,
        shops: spec.shops.clone(),
    };
    sign_claims(secret, &claims)
}

pub fn sign_claims(
    secret: &str,
    claims: &RoomClaims,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Checks a room token and returns its claims.
pub fn verify(keys: &Keys, token: &str) -> Result<RoomClaims, ProtoError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(ProtoError::new(
            ErrorCode::TokenMissing,
            "no access token was given",
        ));
    }
    // The issuer names the key whose secret must verify the signature, so it is read
    // before verification (and trusted only once the signature checks out).
    let issuer = unverified_issuer(token)?;
    let Some(secret) = keys.secret(&issuer) else {
        return Err(ProtoError::new(
            ErrorCode::TokenUnknownKey,
            format!(
                "the token was signed with API key '{issuer}', which this server does not know"
            ),
        ));
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    let data = jsonwebtoken::decode::<RoomClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => ProtoError::new(
            ErrorCode::TokenInvalidSignature,
            "the token's signature does not match its API key's secret",
        ),
        ErrorKind::ExpiredSignature => ProtoError::new(
            ErrorCode::TokenExpired,
            "the token has expired; ask your backend for a new one",
        ),
        ErrorKind::ImmatureSignature => ProtoError::new(
            ErrorCode::TokenNotYetValid,
            "the token is not valid yet (check the issuer's clock)",
        ),
        _ => ProtoError::new(
            ErrorCode::TokenMalformed,
            format!("the token's claims are invalid: {e}"),
        ),
    })?;
    Ok(data.claims)
}

/// Checks that verified claims admit to `room`.
pub fn check_room(claims: &RoomClaims, room: &str) -> Result<(), ProtoError> {
    if claims.room == room {
        Ok(())
    } else {
        Err(ProtoError::new(
            ErrorCode::TokenWrongRoom,
            format!("the token admits to room '{}', not '{room}'", claims.room),
        ))
    }
}

fn unverified_issuer(token: &str) -> Result<String, ProtoError> {
    let malformed =
        |why: &str| ProtoError::new(ErrorCode::TokenMalformed, format!("not a valid JWT: {why}"));
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed("payload is not base64url"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| malformed("payload is not JSON"))?;
    value
        .get("iss")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| malformed("no 'iss' (API key) claim"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{dev_keys, DEV_API_KEY, DEV_API_SECRET};

    fn spec() -> TokenSpec {
        TokenSpec {
            room: "r".into(),
            identity: "alice".into(),
            name: "Alice".into(),
            role: Role::Shopper,
            ttl: Duration::from_secs(60),
            grants: None,
            metadata: None,
            chat: false,
            shops: Vec::new(),
        }
    }

    fn code(token: &str) -> ErrorCode {
        verify(&dev_keys(), token).unwrap_err().code
    }

    #[test]
    fn round_trip() {
        let token = sign(DEV_API_KEY, DEV_API_SECRET, &spec(), unix_now()).unwrap();
        let claims = verify(&dev_keys(), &token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.room, "r");
    }

    #[test]
    fn each_failure_has_its_code() {
        let now = unix_now();
        assert_eq!(code(""), ErrorCode::TokenMissing);
        assert_eq!(code("garbage"), ErrorCode::TokenMalformed);
        assert_eq!(code("a.b.c"), ErrorCode::TokenMalformed);
        let forged = sign(
            DEV_API_KEY,
            "another-secret-of-sufficient-length!!",
            &spec(),
            now,
        )
        .unwrap();
        assert_eq!(code(&forged), ErrorCode::TokenInvalidSignature);
        let unknown = sign("other", DEV_API_SECRET, &spec(), now).unwrap();
        assert_eq!(code(&unknown), ErrorCode::TokenUnknownKey);
        let expired = sign(DEV_API_KEY, DEV_API_SECRET, &spec(), now - 3600).unwrap();
        assert_eq!(code(&expired), ErrorCode::TokenExpired);
        let future = sign(DEV_API_KEY, DEV_API_SECRET, &spec(), now + 3600).unwrap();
        assert_eq!(code(&future), ErrorCode::TokenNotYetValid);
    }

    #[test]
    fn tampered_claims_fail_the_signature() {
        let token = sign(DEV_API_KEY, DEV_API_SECRET, &spec(), unix_now()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        claims["role"] = "host".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            engine.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(code(&forged), ErrorCode::TokenInvalidSignature);
    }
}
