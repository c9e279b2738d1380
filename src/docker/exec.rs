//! Commands inside running containers with their output streamed (a
//! database dump) or their input streamed (a restore), with no TTY and no
//! shell pipe. Secrets go in the exec's environment, never in its argv.

use std::io::{self, Read};
use std::pin::Pin;

use anyhow::{bail, Context, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Engine;

/// One command to run in a container.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub container: String,
    pub cmd: Vec<String>,
    /// `NAME=value` pairs, e.g. `PGPASSWORD=…`: the exec's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
}

impl ExecSpec {
    pub fn new(container: &str, cmd: &[&str]) -> ExecSpec {
        ExecSpec {
            container: container.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            user: None,
        }
    }

    pub fn env(mut self, env: Vec<String>) -> ExecSpec {
        self.env = env;
        self
    }

    fn describe(&self) -> String {
        self.cmd.first().cloned().unwrap_or_default()
    }
}

type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// What a finished command printed.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Reads a command's stdout as it runs. At the end of the output it checks
/// the exit code; a failed command makes the last read an error, so a
/// consumer (the repository) never commits a truncated dump as complete.
pub struct ExecReader<'e> {
    engine: &'e Engine,
    exec_id: String,
    what: String,
    output: OutputStream,
    pending: bytes::Bytes,
    stderr: Vec<u8>,
    done: bool,
}

/// A command whose stdin and stdout stay open for a conversation: lines are
/// sent and answers read back while it runs (a psql session holding a
/// transaction).
pub struct ExecSession<'e> {
    engine: &'e Engine,
    exec_id: String,
    what: String,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: OutputStream,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Engine {
    fn start_exec(&self, spec: &ExecSpec, stdin: bool) -> Result<(String, StartExecResults)> {
        let opts = CreateExecOptions {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(spec.env.clone()),
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            ..Default::default()
        };
        let created = self
            .block_on(self.api.create_exec(&spec.container, opts))
            .with_context(|| {
                format!(
                    "preparing `{}` in container {}",
                    spec.describe(),
                    spec.container
                )
            })?;
        let start = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(1 << 16),
        };
        let started = self
            .block_on(self.api.start_exec(&created.id, Some(start)))
            .with_context(|| format!("starting `{}`", spec.describe()))?;
        Ok((created.id, started))
    }

    fn exit_code(&self, exec_id: &str) -> Result<i64> {
        let inspect = self.block_on(self.api.inspect_exec(exec_id))?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// An error carrying the command's stderr when it exited non-zero.
    fn check_exit(&self, exec_id: &str, what: &str, stderr: &[u8]) -> Result<()> {
        let code = self.exit_code(exec_id)?;
        if code != 0 {
            bail!(
                "`{what}` failed (exit {code}): {}",
                String::from_utf8_lossy(stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts `spec` and returns a reader over its stdout.
    pub fn exec_reader(&self, spec: &ExecSpec) -> Result<ExecReader<'_>> {
        let (exec_id, started) = self.start_exec(spec, false)?;
        let StartExecResults::Attached { output, .. } = started else {
            bail!("the engine detached `{}`", spec.describe());
        };
        Ok(ExecReader {
            engine: self,
            exec_id,
            what: spec.describe(),
            output,
            pending: bytes::Bytes::new(),
            stderr: Vec::new(),
            done: false,
        })
    }

    /// Starts `spec` with stdin attached, for a conversation.
    pub fn exec_session(&self, spec: &ExecSpec) -> Result<ExecSession<'_>> {
        let (exec_id, started) = self.start_exec(spec, true)?;
        let StartExecResults::Attached { output, input } = started else {
            bail!("the engine detached `{}`", spec.describe());
        };
        Ok(ExecSession {
            engine: self,
            exec_id,
            what: spec.describe(),
            input,
            output,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }

    /// Runs `spec` to the end, feeding `input` to its stdin (if any), and
    /// returns its output; a non-zero exit is an error carrying its stderr.
    pub fn exec(
        &self,
        spec: &ExecSpec,
        input: Option<&mut (dyn Read + Send)>,
    ) -> Result<ExecOutput> {
        let (exec_id, started) = self.start_exec(spec, input.is_some())?;
        let StartExecResults::Attached {
            mut output,
            input: mut stdin,
        } = started
        else {
            bail!("the engine detached `{}`", spec.describe());
        };
        let mut collected = ExecOutput::default();
        self.block_on(async {
            let feed = async {
                if let Some(reader) = input {
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = reader.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        stdin.write_all(&buf[..n]).await?;
                    }
                }
                // Half-close: the command sees end of input.
                stdin.shutdown().await?;
                io::Result::Ok(())
            };
            let drain = async {
                while let Some(item) = output.next().await {
                    match item? {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            collected.stdout.extend_from_slice(&message)
                        }
                        LogOutput::StdErr { message } => {
                            collected.stderr.extend_from_slice(&message)
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                }
                anyhow::Ok(())
            };
            let (fed, drained) = tokio::join!(feed, drain);
            drained?;
            fed.with_context(|| format!("sending input to `{}`", spec.describe()))
        })?;
        let code = self.exit_code(&exec_id)?;
        if code != 0 {
            bail!(
                "`{}` in container {} failed (exit {code}): {}",
                spec.describe(),
                spec.container,
                String::from_utf8_lossy(&collected.stderr).trim()
            );
        }
        Ok(collected)
    }
}

impl ExecReader<'_> {
    fn finish(&mut self) -> io::Result<()> {
        self.done = true;
        self.engine
            .check_exit(&self.exec_id, &self.what, &self.stderr)
            .map_err(io::Error::other)
    }
}

impl Read for ExecReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            if self.done {
                return Ok(0);
            }
            let handle = self.engine.rt.handle().clone();
            match handle.block_on(self.output.next()) {
                None => {
                    self.finish()?;
                    return Ok(0);
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    self.pending = message
                }
                Some(Ok(LogOutput::StdErr { message })) => self.stderr.extend_from_slice(&message),
                Some(Ok(LogOutput::StdIn { .. })) => {}
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        Ok(n)
    }
}

impl ExecSession<'_> {
    /// Writes `bytes` to the command's stdin.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let input = &mut self.input;
        self.engine
            .block_on(async {
                input.write_all(bytes).await?;
                input.flush().await
            })
            .with_context(|| format!("sending input to `{}`", self.what))
    }

    /// What the command prints up to a line equal to `marker` (which is
    /// consumed). The command ending first is an error with its stderr.
    pub fn read_until(&mut self, marker: &str) -> Result<String> {
        let end = format!("{marker}\n");
        loop {
            let found =
                self.stdout.windows(end.len()).enumerate().find(|(i, w)| {
                    *w == end.as_bytes() && (*i == 0 || self.stdout[i - 1] == b'\n')
                });
            if let Some((at, _)) = found {
                let text = String::from_utf8_lossy(&self.stdout[..at]).into_owned();
                self.stdout.drain(..at + end.len());
                return Ok(text);
            }
            let handle = self.engine.rt.handle().clone();
            match handle.block_on(self.output.next()) {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    self.stdout.extend_from_slice(&message)
                }
                Some(Ok(LogOutput::StdErr { message })) => self.stderr.extend_from_slice(&message),
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {
                    let code = self.engine.exit_code(&self.exec_id)?;
                    bail!(
                        "`{}` ended (exit {code}) before answering: {}",
                        self.what,
                        String::from_utf8_lossy(&self.stderr).trim()
                    );
                }
            }
        }
    }

    /// Ends the command's input, waits for it to exit and checks its status.
    pub fn finish(mut self) -> Result<()> {
        let (input, output) = (&mut self.input, &mut self.output);
        let stderr = &mut self.stderr;
        self.engine.block_on(async {
            input.shutdown().await.ok();
            while let Some(item) = output.next().await {
                if let LogOutput::StdErr { message } = item? {
                    stderr.extend_from_slice(&message);
                }
            }
            anyhow::Ok(())
        })?;
        self.engine
            .check_exit(&self.exec_id, &self.what, &self.stderr)
    }
}
