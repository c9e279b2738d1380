//! Bridges between blocking `Read` and the engine's async byte streams, so
//! the rest of upkeep stays synchronous and data never lands on disk on its
//! way between the engine and its destination.

use std::io::{self, Read};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, bollard::errors::Error>> + Send>>;

/// A blocking reader over a stream the engine sends (an archive, a log).
pub struct StreamReader {
    handle: Handle,
    stream: ByteStream,
    pending: Bytes,
}

impl StreamReader {
    pub(super) fn new(handle: Handle, stream: ByteStream) -> StreamReader {
        StreamReader {
            handle,
            stream,
            pending: Bytes::new(),
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.pending = b,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        Ok(n)
    }
}

/// Turns a blocking reader into a body stream for the engine: a thread reads
/// 1 MiB chunks into a bounded channel (memory stays at a few chunks).
pub(super) fn body_from_reader<R: Read + Send + 'static>(
    mut reader: R,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let item = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
