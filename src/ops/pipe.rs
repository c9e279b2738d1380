//! A byte stream between two sides that both insist on calling: the
//! repository writes a stream into a `Write`, the engine reads one from a
//! `Read` (and the same between two execs). The producer runs on a second
//! thread and writes into a pipe that the consumer reads.

use std::io::{self, Read};

use anyhow::Result;

/// Runs `produce` on a second thread writing into a pipe that `consume`
/// reads; returns both results. When the consumer fails, the pipe is closed
/// at once so the producer stops (its next write fails) instead of producing
/// the rest of the stream for nobody (in a dump upgrade: a whole `pg_dump`
/// during the downtime). The error returned is the cause: the producer's,
/// unless it failed only because the consumer had gone.
pub fn pipe<P: Send, T>(
    produce: impl FnOnce(&mut io::PipeWriter) -> Result<P> + Send,
    consume: impl FnOnce(Draining) -> Result<T>,
) -> Result<(P, T)> {
    let (reader, mut writer) = io::pipe()?;
    // a second handle on the read end, so this side decides whether the
    // rest is read away (consumer done) or the pipe is closed (consumer failed)
    let mut rest = reader.try_clone()?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let produced = produce(&mut writer);
            // Dropping the writer ends the consumer's input.
            drop(writer);
            produced
        });
        let consumed = consume(Draining(reader));
        if consumed.is_ok() {
            // Readers such as tar stop before the end of their input
            // (padding); the producer must finish (and a digest it keeps
            // must cover every byte).
            let _ = io::copy(&mut rest, &mut io::sink());
        }
        drop(rest);
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the producing thread panicked"))?;
        match (produced, consumed) {
            (Ok(p), Ok(c)) => Ok((p, c)),
            // the consumer failed because the producer did: the cause first
            (Err(p), Err(_)) if !is_broken_pipe(&p) => Err(p),
            (_, Err(c)) => Err(c),
            (Err(p), Ok(_)) => Err(p),
        }
    })
}

/// The producer failed only because the consumer went away.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The consumer's end of the pipe. What it leaves unread is read away by
/// [`pipe`] once the consumer has succeeded.
pub struct Draining(io::PipeReader);

impl Read for Draining {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
