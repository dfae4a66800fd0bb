//! The watch stream (`GET /v1/watch`) as typed events: [`Client::watch`] opens it,
//! [`Watch::next`] parses its Server-Sent Events.

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use meshward_api::node::Change;

use crate::{Client, ClientError};

/// Largest single event accepted, in bytes.
pub const MAX_EVENT: usize = 1024 * 1024;

/// One event of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A row of the current state (a stream started without `from`).
    Snapshot(Change),
    /// The snapshot is complete; the changes after this cursor follow.
    Ready(u64),
    /// A change; its `cursor` is the event's id.
    Change(Change),
    /// The client read too slowly: the stream closed; resume after this cursor.
    Overflow {
        /// The cursor to resume from.
        resume_from: u64,
    },
    /// The cursor is older than the node keeps: restart without `from` (a snapshot).
    Compacted {
        /// The oldest cursor the node keeps.
        first_kept: u64,
    },
    /// The node closed the stream (the grants no longer allow it, or it failed); the text says
    /// why.
    Closed(String),
}

/// An open watch stream.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    last_id: Option<u64>,
}

impl Client {
    /// Opens the watch stream: `tables` comma-separated (`None`: all), `from` a cursor or
    /// `now` (`None`: the current state first). A refusal (bad input, grants, compacted, too
    /// many streams) is its problem.
    pub async fn watch(
        &self,
        tables: Option<&str>,
        from: Option<&str>,
    ) -> Result<Watch, ClientError> {
        let mut query = Vec::new();
        if let Some(t) = tables {
            query.push(format!("tables={}", encode(t)));
        }
        if let Some(f) = from {
            query.push(format!("from={}", encode(f)));
        }
        let path = if query.is_empty() {
            "/v1/watch".to_string()
        } else {
            format!("/v1/watch?{}", query.join("&"))
        };
        let response = self.stream(&path).await?;
        Ok(Watch {
            body: response.into_body(),
            buf: Vec::new(),
            last_id: None,
        })
    }
}

impl Watch {
    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            while let Some(end) = find_blank(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block[..end])? {
                    return Ok(Some(event));
                }
            }
            if self.buf.len() > MAX_EVENT {
                return Err(ClientError::Protocol("a watch event is too large".into()));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The `id:` of the last event read: the cursor to resume after.
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    fn parse(&mut self, block: &[u8]) -> Result<Option<WatchEvent>, ClientError> {
        let bad = |what: &str| ClientError::Protocol(format!("watch stream: {what}"));
        let text = std::str::from_utf8(block).map_err(|_| bad("not UTF-8"))?;
        let (mut event, mut data) = ("message", String::new());
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim();
            } else if let Some(v) = line.strip_prefix("id:") {
                self.last_id = Some(v.trim().parse().map_err(|_| bad("an id is not a cursor"))?);
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        let json: serde_json::Value =
            serde_json::from_str(&data).map_err(|_| bad("data is not JSON"))?;
        let change = |v: serde_json::Value| {
            serde_json::from_value::<Change>(v).map_err(|e| bad(&format!("a change: {e}")))
        };
        let number = |key: &str| json[key].as_u64().ok_or_else(|| bad(&format!("no {key}")));
        Ok(Some(match event {
            "snapshot" => WatchEvent::Snapshot(change(json)?),
            "ready" => WatchEvent::Ready(number("cursor")?),
            "change" => WatchEvent::Change(change(json)?),
            "overflow" => WatchEvent::Overflow {
                resume_from: number("resume_from")?,
            },
            "compacted" => WatchEvent::Compacted {
                first_kept: number("first_kept")?,
            },
            "closed" => WatchEvent::Closed(json["detail"].as_str().unwrap_or_default().to_string()),
            _ => return Ok(None),
        }))
    }
}

fn find_blank(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b',' | b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
