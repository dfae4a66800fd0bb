//! Errors as RFC 9457 problem details (`application/problem+json`): a stable `type` per kind
//! of error, the HTTP status it means, a human `detail`, and the request field that was wrong.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every kind of error the API answers, each with one stable `type` URI and one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The request is malformed or a field is invalid (400); `field` names it.
    BadInput,
    /// The caller's certificate is revoked, or it names no user (401).
    Unauthenticated,
    /// The caller's grants do not allow this (403).
    Forbidden,
    /// No such resource (404): an unknown path, user, key or record.
    NotFound,
    /// The request conflicts with the current state (409): the user exists, a hand-over is
    /// running, the chain moved.
    Conflict,
    /// The body is larger than the endpoint accepts (413).
    TooLarge,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// Too many requests from this caller (429); retry after `retry_after_s`.
    RateLimited,
    /// The node cannot serve this now (503): the leader is unreachable (`leader` names it),
    /// the disk is full, the node is sealed, or it is not in a cluster.
    Unavailable,
    /// The node failed (500); its log says more.
    Internal,
}

/// A problem document (RFC 9457), the body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable URI of the kind of error, e.g. `urn:meshward:problem:bad-input`.
    #[serde(rename = "type")]
    pub kind_uri: String,
    /// Short summary of the kind of error.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do, in a sentence.
    pub detail: String,
    /// The request field that was wrong (a JSON field, query parameter or path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The leader's address, when the request needed the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Seconds to wait before retrying (with 429, also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl ProblemKind {
    /// Every kind.
    pub const ALL: [ProblemKind; 10] = [
        ProblemKind::BadInput,
        ProblemKind::Unauthenticated,
        ProblemKind::Forbidden,
        ProblemKind::NotFound,
        ProblemKind::Conflict,
        ProblemKind::TooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::RateLimited,
        ProblemKind::Unavailable,
        ProblemKind::Internal,
    ];

    /// The stable name in the `type` URI.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::BadInput => "bad-input",
            ProblemKind::Unauthenticated => "unauthenticated",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not-found",
            ProblemKind::Conflict => "conflict",
            ProblemKind::TooLarge => "too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Internal => "internal",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            ProblemKind::BadInput => 400,
            ProblemKind::Unauthenticated => 401,
            ProblemKind::Forbidden => 403,
            ProblemKind::NotFound => 404,
            ProblemKind::Conflict => 409,
            ProblemKind::TooLarge => 413,
            ProblemKind::UnsupportedMediaType => 415,
            ProblemKind::RateLimited => 429,
            ProblemKind::Unavailable => 503,
            ProblemKind::Internal => 500,
        }
    }

    /// The `title` of its problems.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::BadInput => "bad input",
            ProblemKind::Unauthenticated => "not authenticated",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not found",
            ProblemKind::Conflict => "conflict",
            ProblemKind::TooLarge => "request too large",
            ProblemKind::UnsupportedMediaType => "unsupported media type",
            ProblemKind::RateLimited => "too many requests",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Internal => "internal error",
        }
    }

    /// Its `type` URI.
    pub fn uri(self) -> String {
        format!("urn:meshward:problem:{}", self.name())
    }

    /// The kind with this `type` URI, if any.
    pub fn from_uri(uri: &str) -> Option<ProblemKind> {
        let name = uri.strip_prefix("urn:meshward:problem:")?;
        ProblemKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Problem {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind_uri: kind.uri(),
            title: kind.title().to_string(),
            status: kind.status(),
            detail: detail.into(),
            field: None,
            leader: None,
            retry_after_s: None,
        }
    }

    /// A 400 naming the wrong `field`.
    pub fn bad_input(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.into()),
            ..Problem::new(ProblemKind::BadInput, detail)
        }
    }

    /// The kind, from the `type` URI (a document from another server may name none).
    pub fn kind(&self) -> Option<ProblemKind> {
        ProblemKind::from_uri(&self.kind_uri)
    }

    /// This problem, naming the leader.
    pub fn with_leader(mut self, leader: impl Into<String>) -> Problem {
        self.leader = Some(leader.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_uri_and_reads_back_from_it() {
        let mut uris = std::collections::BTreeSet::new();
        for kind in ProblemKind::ALL {
            assert!(uris.insert(kind.uri()), "{kind:?}");
            assert_eq!(ProblemKind::from_uri(&kind.uri()), Some(kind));
        }
        assert_eq!(ProblemKind::from_uri("about:blank"), None);
    }

    #[test]
    fn a_problem_is_the_rfc_9457_shape() {
        let p = Problem::bad_input("events[3].kind", "unknown event kind \"x\"");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["type"], "urn:meshward:problem:bad-input");
        assert_eq!(json["status"], 400);
        assert_eq!(json["field"], "events[3].kind");
        assert!(json.get("leader").is_none());
        assert_eq!(serde_json::from_value::<Problem>(json).unwrap(), p);
    }
}
