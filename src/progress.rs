//! Progress bars on stderr; hidden when stderr is not a terminal or when
//! output is JSON, so scripts and logs stay clean.

use std::io::{IsTerminal, Read};

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count bar for `total` bytes labelled `what`.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || std::env::var_os("UPKEEP_NO_PROGRESS").is_some() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A reader that advances `bar` by what passes through it.
pub struct Counted<R> {
    pub inner: R,
    pub bar: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A byte counter for work of unknown size (a stream being backed up).
pub fn bytes_spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || std::env::var_os("UPKEEP_NO_PROGRESS").is_some() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}")
            .expect("static template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
