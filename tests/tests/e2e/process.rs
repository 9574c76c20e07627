//! Running the real `volley` binary as a child process: to completion, aborted at a fail
//! point, or SIGKILLed after a while.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `volley` binary built beside this test binary (`target/<profile>/volley`).
pub fn volley_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("volley");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p volley)",
        bin.display()
    );
    bin
}

/// A `volley` command. Its Flight SQL server takes any free port, so runs side by side do not
/// collide on the default one.
pub fn volley_command() -> Command {
    let mut cmd = Command::new(volley_bin());
    cmd.env("VOLLEY_FLIGHT", "127.0.0.1:0");
    cmd.env("VOLLEY_HTTP", "127.0.0.1:0");
    cmd
}

/// Runs `command`, failing the test with its stderr unless it succeeds.
pub fn succeed(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `volley <args>` in `dir`, which must succeed.
pub fn volley_ok(dir: &Path, args: &[&str]) -> Output {
    succeed(volley_command().args(args).current_dir(dir))
}

/// How a run is stopped before it finishes.
pub enum Kill {
    /// SIGKILL this long after start.
    After(Duration),
    /// A `VOLLEY_FAILPOINT` spec (`name` or `name:N`).
    At(String),
}

/// Runs `volley run pipeline.sql --quiet` in `dir`, stopped as `kill` says; returns its output.
pub fn run(dir: &Path, kill: Option<&Kill>) -> Output {
    run_with(dir, kill, &[], &[])
}

/// Like [`run`], with more arguments and environment variables.
pub fn run_with(dir: &Path, kill: Option<&Kill>, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = volley_command();
    cmd.args([
        "run",
        "pipeline.sql",
        "--quiet",
        "--pipeline-id",
        "pipeline",
    ])
    .args(args)
    .envs(env.iter().map(|(k, v)| (*k, *v)))
    .current_dir(dir)
    .env_remove("VOLLEY_FAILPOINT")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(Kill::At(spec)) = kill {
        cmd.env("VOLLEY_FAILPOINT", spec);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(Kill::After(after)) = kill {
        let started = Instant::now();
        while started.elapsed() < *after && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

/// Like [`run`]; true when the run was killed, false when it finished. A clean error exit
/// (rather than a signal) fails the test with the run's stderr.
pub fn run_killed(dir: &Path, kill: Option<&Kill>) -> bool {
    killed(run(dir, kill))
}

/// Whether `output` is that of a killed run (false: it finished). A clean error exit fails
/// the test with the run's stderr.
pub fn killed(output: Output) -> bool {
    if output.status.success() {
        return false;
    }
    assert!(
        output.status.code().is_none(),
        "volley failed instead of being killed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// A running `volley` that announced an address on stderr; killed when dropped, so a test
/// that fails does not leave it running.
pub struct Announced {
    /// The process.
    pub child: std::process::Child,
    /// The address: the first word after the announcement's prefix.
    pub addr: String,
    /// The rest of its stderr, drained so the status line never blocks it.
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Announced {
    /// Spawns `cmd` (stderr piped here) and waits for a stderr line starting with `prefix`.
    pub fn spawn(cmd: &mut Command, prefix: &str) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("volley exited before announcing '{prefix}'"))
                .unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                break rest
                    .split([' ', ','])
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        let stderr = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Self {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Waits for the process to exit: its status and the rest of its stderr.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default().join("\n"))
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
