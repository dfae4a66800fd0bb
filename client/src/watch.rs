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
    parser: Parser,
}

/// Splits Server-Sent Events out of the bytes of a stream, however they are cut.
#[derive(Debug, Default)]
struct Parser {
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
            parser: Parser::default(),
        })
    }
}

impl Watch {
    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event()? {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The `id:` of the last event read: the cursor to resume after.
    pub fn last_id(&self) -> Option<u64> {
        self.parser.last_id
    }
}

impl Parser {
    /// The next complete event in the buffer, if any; an event over [`MAX_EVENT`] is an error.
    fn next_event(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        while let Some(end) = find_blank(&self.buf) {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            if let Some(event) = self.parse(&block[..end])? {
                return Ok(Some(event));
            }
        }
        if self.buf.len() > MAX_EVENT {
            return Err(ClientError::Protocol("a watch event is too large".into()));
        }
        Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> (Vec<WatchEvent>, Option<u64>) {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.buf.extend_from_slice(c);
            while let Some(e) = p.next_event().unwrap() {
                out.push(e);
            }
        }
        (out, p.last_id)
    }

    #[test]
    fn events_cut_anywhere_parse_the_same() {
        let text = b"event: change\nid: 7\ndata: {\"cursor\":\"7\",\"table\":\"events\",\"op\":\"append\",\"row\":{}}\n\n: keep-alive\n\nevent: overflow\nid: 7\ndata: {\"resume_from\":7}\n\nevent: future\ndata: {}\n\n";
        let whole = events(&[text]);
        assert_eq!(whole.1, Some(7));
        assert_eq!(whole.0.len(), 2);
        assert!(matches!(&whole.0[0], WatchEvent::Change(c) if c.cursor == "7"));
        assert_eq!(whole.0[1], WatchEvent::Overflow { resume_from: 7 });
        for cut in 1..text.len() {
            assert_eq!(events(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_and_oversize_are_errors_not_panics() {
        for bad in [
            &b"event: change\ndata: nope\n\n"[..],
            b"id: x\ndata: {}\n\n",
            b"data: \xff\n\n",
        ] {
            let mut p = Parser::default();
            p.buf.extend_from_slice(bad);
            assert!(p.next_event().is_err(), "{bad:?}");
        }
        let mut p = Parser {
            buf: vec![b'x'; MAX_EVENT + 1],
            ..Default::default()
        };
        assert!(p.next_event().is_err());
    }
}
