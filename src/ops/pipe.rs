//! A byte stream between two sides that both insist on calling: the
//! repository writes a stream into a `Write`, the engine reads one from a
//! `Read` (and the same between two execs). The producer runs on a second
//! thread and writes into a pipe that the consumer reads.

use std::io::{self, Read};

use anyhow::Result;

/// Runs `produce` on a second thread writing into a pipe that `consume`
/// reads; returns both results, the producer's error first.
pub fn pipe<P: Send, T>(
    produce: impl FnOnce(&mut io::PipeWriter) -> Result<P> + Send,
    consume: impl FnOnce(Draining) -> Result<T>,
) -> Result<(P, T)> {
    let (reader, mut writer) = io::pipe()?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let produced = produce(&mut writer);
            // Dropping the writer ends the consumer's input.
            drop(writer);
            produced
        });
        let consumed = consume(Draining(reader));
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the producing thread panicked"))?;
        Ok((produced?, consumed?))
    })
}

/// The consumer's end of the pipe. Readers such as tar stop before the
/// end of their input (padding); whatever is left is read away on drop so
/// the producer always finishes (and a digest it keeps covers every byte).
pub struct Draining(io::PipeReader);

impl Read for Draining {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        let _ = io::copy(&mut self.0, &mut io::sink());
    }
}
