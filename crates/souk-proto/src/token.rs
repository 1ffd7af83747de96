//! Access-token claims.
//!
//! A token is a JWT (HS256) signed with a tenant's API secret by the merchant's backend
//! (or `souk token`). The server trusts nothing in a join but what these claims grant.

use serde::{Deserialize, Serialize};

/// What a participant is in a room. The role sets default grants; explicit grants in
/// the token override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A shopper in a consultation.
    Shopper,
    /// A merchant's staff member (also a human taking over from the AI agent).
    Staff,
    /// The host of a live sale: publishes and moderates.
    Host,
    /// A co-host on a stage seat: publishes while seated.
    Cohost,
    /// A live-sale viewer: subscribes, may comment.
    Audience,
    /// The AI customer-service agent.
    Agent,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Shopper,
        Role::Staff,
        Role::Host,
        Role::Cohost,
        Role::Audience,
        Role::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shopper => "shopper",
            Role::Staff => "staff",
            Role::Host => "host",
            Role::Cohost => "cohost",
            Role::Audience => "audience",
            Role::Agent => "agent",
        }
    }

    /// The grants a role gets when the token does not say otherwise. Only the audience
    /// starts without publish rights: it earns them on a stage seat.
    pub fn default_grants(self) -> Grants {
        Grants {
            publish: self != Role::Audience,
            subscribe: true,
            data: true,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role '{s}', expected one of {}", names.join(", "))
            })
    }
}

/// What a participant may do in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May send audio and video.
    pub publish: bool,
    /// May receive other participants' tracks.
    pub subscribe: bool,
    /// May send room data and events.
    pub data: bool,
}

/// The claims of an access token: a room token, a chat token, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// The API key whose secret signed this token.
    pub iss: String,
    /// The participant's identity, unique within the room.
    pub sub: String,
    /// Issued-at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not-before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry, seconds since the Unix epoch. Limits joining and resuming; a live
    /// session outlives it.
    pub exp: u64,
    /// The room this token admits to; empty in a chat-only token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    /// Display name shown to others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: Role,
    /// Explicit grants; when absent the role's defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
    /// Opaque application metadata shown to other participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// May use chat (a user-scoped grant, independent of any room).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chat: bool,
    /// Shops whose shared inbox this user answers for (a seller's team).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shops: Vec<String>,
}

impl RoomClaims {
    /// The grants in force: explicit ones, or the role's defaults.
    pub fn effective_grants(&self) -> Grants {
        self.grants.unwrap_or_else(|| self.role.default_grants())
    }
}

/// Longest identity accepted, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;
/// Longest room name accepted, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 128;

/// Checks a room name or identity: non-empty, bounded, and free of control characters,
/// so it is safe to log, to put in a URL and to show.
pub fn validate_name(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > max {
        return Err(format!("{what} is longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_cannot_publish_by_default() {
        assert!(!Role::Audience.default_grants().publish);
        assert!(Role::Host.default_grants().publish);
        assert!(Role::Shopper.default_grants().subscribe);
    }

    #[test]
    fn roles_round_trip_through_strings() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("admin"
            .parse::<Role>()
            .unwrap_err()
            .contains("expected one of"));
    }

    #[test]
    fn explicit_grants_override_role() {
        let claims = RoomClaims {
            iss: "k".into(),
            sub: "a".into(),
            iat: 0,
            nbf: None,
            exp: 10,
            room: "r".into(),
            name: None,
            role: Role::Audience,
            grants: Some(Grants {
                publish: true,
                subscribe: true,
                data: false,
            }),
            metadata: None,
            chat: false,
            shops: Vec::new(),
        };
        assert!(claims.effective_grants().publish);
        assert!(!claims.effective_grants().data);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("room", "", 8).is_err());
        assert!(validate_name("room", "a\nb", 8).is_err());
        assert!(validate_name("room", "123456789", 8).is_err());
        assert!(validate_name("room", "موعد-1", 64).is_ok());
    }
}
