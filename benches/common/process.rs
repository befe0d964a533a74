//! Processes a bench starts: children killed with it, this binary re-executed in a role and
//! driven line by line, and programs installed from Debian when missing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};

use super::Batch;

/// A child process that is SIGKILLed and reaped when dropped, and also when this process dies
/// (`PR_SET_PDEATHSIG`): nothing it starts outlives the bench. Spawn from the main thread, whose
/// exit is the process's (the signal follows the spawning thread).
pub struct Owned(Child);

impl Owned {
    /// Spawns `command`.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn spawn(command: &mut Command) -> std::io::Result<Owned> {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl(2) is async-signal-safe and touches nothing of the parent's state.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().map(Owned)
    }

    /// The process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This bench binary re-executed in a role, chosen by an environment variable, and driven by
/// lines: it reads commands on stdin and prints one line per answer on stdout (its stderr is
/// the bench's). Killed when dropped.
pub struct Worker {
    role: String,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    process: Owned,
}

impl Worker {
    /// Starts this binary with `role_var=role` and `args`. Does not wait for it.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn start(role_var: &str, role: &str, args: &[String]) -> anyhow::Result<Worker> {
        let mut process = Owned::spawn(
            Command::new(std::env::current_exe()?)
                .env(role_var, role)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .with_context(|| format!("spawn the {role} process"))?;
        let stdin = process.child().stdin.take().context("child stdin")?;
        let stdout = BufReader::new(process.child().stdout.take().context("child stdout")?);
        Ok(Worker {
            role: role.to_owned(),
            stdin,
            stdout,
            process,
        })
    }

    /// The role's name.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The next line the process prints (with its line end), or an error if it exits first.
    ///
    /// # Errors
    /// The process exited, or its stdout failed.
    pub fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            bail!(
                "the {} process exited early ({:?})",
                self.role,
                self.process.child().wait()?
            );
        }
        Ok(line)
    }

    /// Writes `command` as one line and returns the line that answers it.
    ///
    /// # Errors
    /// As [`Self::read_line`], or the process's stdin is closed.
    pub fn request(&mut self, command: &str) -> anyhow::Result<String> {
        self.write_line(command)?;
        self.read_line()
    }

    /// Writes `command` as one line, without waiting for its answer.
    ///
    /// # Errors
    /// The process's stdin is closed.
    pub fn write_line(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}")?;
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Has the process run `command`, which answers with a [`Batch`] line, and returns the
    /// batch. When some of its operations failed, prints `failed(errors)` to stderr.
    ///
    /// # Errors
    /// As [`Self::request`], or the answer is not a batch.
    pub fn batch(
        &mut self,
        command: &str,
        failed: impl FnOnce(usize) -> String,
    ) -> anyhow::Result<Batch> {
        let batch = Batch::from_json(&self.request(command)?)?;
        if batch.errors > 0 {
            eprintln!("{}", failed(batch.errors));
        }
        Ok(batch)
    }
}

/// Installs the Debian `packages` unless `probe` (a command and its arguments, such as
/// `["redis-server", "--version"]`) runs: `apt-get update`, then `apt-get install -y`. Needs
/// root, as on the bench machines.
///
/// # Errors
/// apt-get failed.
pub fn ensure_installed(probe: &[&str], packages: &[&str]) -> anyhow::Result<()> {
    let present = Command::new(probe[0])
        .args(&probe[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!(
        "{}: not installed; installing {} from Debian",
        probe[0],
        packages.join(" ")
    );
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("run apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed: {status}", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    apt(&[&["install", "-y", "-q"], packages].concat())
}
