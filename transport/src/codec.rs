//! The sync request-response codec: one length-prefixed byte string each way.
//!
//! Wire format of a request and of a response: a 4-byte big-endian length, then that many
//! bytes. The stream is closed after it. A length above the configured maximum is an error
//! before anything is read or allocated; the buffer grows only as bytes actually arrive.

use std::io;
use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicBool, Ordering};

use futures::prelude::*;
use libp2p::StreamProtocol;

use crate::metrics::{self, Counters};

/// Protocol name of sync requests.
pub(crate) const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshward/sync/1");

/// Initial buffer size; the buffer grows with the data actually received.
const READ_CHUNK: usize = 64 * 1024;

/// Length-bounded raw-bytes codec. A frame refused for its size on reading is counted in
/// [`Counters::requests_oversize`] or [`Counters::responses_oversize`].
#[derive(Clone, Debug)]
pub(crate) struct Codec {
    max_request: usize,
    max_response: usize,
    counters: Arc<Counters>,
    /// Fault hook: write frames of any size (a misbehaving peer); reading stays bounded.
    #[cfg(feature = "fault-injection")]
    unbounded_writes: Arc<AtomicBool>,
}

impl Codec {
    pub(crate) fn new(max_request: usize, max_response: usize, counters: Arc<Counters>) -> Self {
        Self {
            max_request,
            max_response,
            counters,
            #[cfg(feature = "fault-injection")]
            unbounded_writes: Arc::default(),
        }
    }

    /// Fault hook: from now on this codec (and its clones) writes frames over the limits.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn unbounded_writes(&self) -> Arc<AtomicBool> {
        self.unbounded_writes.clone()
    }

    /// The limit for writing a frame whose peer reads it with `max`.
    fn write_limit(&self, max: usize) -> usize {
        #[cfg(feature = "fault-injection")]
        if self.unbounded_writes.load(Ordering::Relaxed) {
            return u32::MAX as usize;
        }
        max
    }
}

/// Counts a frame refused for its size (the only `InvalidData` error of [`read_frame`]).
fn count_oversize<T>(
    result: io::Result<T>,
    counter: &std::sync::atomic::AtomicU64,
) -> io::Result<T> {
    if result
        .as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::InvalidData)
    {
        metrics::inc(counter);
    }
    result
}

/// Reads one frame of at most `max` bytes.
pub(crate) async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max} bytes"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    // `len <= max <= usize`, and u64 holds any usize on supported targets.
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

/// Writes one frame of at most `max` bytes.
pub(crate) async fn write_frame<T>(io: &mut T, data: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(data.len())
        .ok()
        .filter(|&len| len as usize <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes exceeds the limit of {max} bytes",
                    data.len()
                ),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        count_oversize(
            read_frame(io, self.max_request).await,
            &self.counters.requests_oversize,
        )
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        count_oversize(
            read_frame(io, self.max_response).await,
            &self.counters.responses_oversize,
        )
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.write_limit(self.max_request)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.write_limit(self.max_response)).await
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;

    fn read(bytes: &[u8], max: usize) -> io::Result<Vec<u8>> {
        block_on(read_frame(&mut Cursor::new(bytes.to_vec()), max))
    }

    #[test]
    fn round_trips_a_frame() {
        let mut out = Cursor::new(Vec::new());
        block_on(write_frame(&mut out, b"digest", 16)).expect("fits");
        assert_eq!(read(&out.into_inner(), 16).expect("valid"), b"digest");
    }

    #[test]
    fn accepts_an_empty_frame() {
        assert_eq!(read(&[0, 0, 0, 0], 16).expect("valid"), Vec::<u8>::new());
    }

    #[test]
    fn rejects_a_truncated_prefix() {
        for len in 0..4 {
            let err = read(&[0, 0, 0, 1][..len], 16).expect_err("truncated prefix");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn rejects_a_truncated_body() {
        let err = read(&[0, 0, 0, 10, 1, 2, 3], 16).expect_err("truncated body");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn rejects_an_oversize_prefix_without_allocating_it() {
        // A 4 GiB claim against a 16-byte limit: an error, not an allocation.
        let err = read(&[0xff, 0xff, 0xff, 0xff, 1, 2], 16).expect_err("oversize");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = read(&[0, 0, 0, 17], 16).expect_err("one over");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_large_claim_within_the_limit_allocates_only_what_arrives() {
        // Claims 32 MiB, sends 3 bytes: truncated, and the buffer never grew to the claim.
        let err = read(&[0x02, 0, 0, 0, 1, 2, 3], 32 * 1024 * 1024).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..2000 {
            let len = round % 40;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            let _ = read(&bytes, 32);
        }
    }

    #[test]
    fn refuses_to_write_an_oversize_frame() {
        let mut out = Cursor::new(Vec::new());
        let err = block_on(write_frame(&mut out, &[0; 17], 16)).expect_err("oversize");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.into_inner().is_empty(), "nothing written");
    }
}
