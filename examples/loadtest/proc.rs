//! Child processes that cannot outlive the harness, and what `/proc` says about them.
//!
//! A [`Proc`] is stopped (SIGTERM, then SIGKILL) when dropped, which covers errors, panics and
//! the SIGINT/SIGTERM handler in `main`. It also runs under `timeout(1)` when available, so it
//! dies by its budget even if the harness is killed outright with SIGKILL.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT_BIN: &str = "/usr/bin/timeout";

/// A running child process, stopped on drop.
pub struct Proc {
    name: &'static str,
    child: Child,
    /// The measured process: the command itself, not the `timeout` wrapper.
    pub pid: u32,
    stdout: Option<ChildStdout>,
}

/// CPU time and memory of one process, and the machine's CPU counters, at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// utime + stime of the process, in clock ticks.
    pub process: u64,
    /// stime alone: the kernel's share (syscalls; loopback TCP is partly accounted here).
    pub process_system: u64,
    /// Context switches of all the process's threads, voluntary and not.
    pub switches: u64,
    /// utime + stime of this harness (the simulator), in clock ticks.
    pub harness: u64,
    /// (busy, total) ticks over all CPUs.
    pub machine: (u64, u64),
}

/// Peak and current resident set size, KiB.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Rss {
    pub peak_kib: u64,
    pub now_kib: u64,
}

impl Proc {
    /// Spawns `command` (program and arguments) with stdout piped and stderr to `stderr` (or
    /// inherited), without proxy variables, to be killed after `budget` at the latest.
    pub fn spawn(
        name: &'static str,
        command: &[String],
        budget: Duration,
        stderr: Option<&Path>,
    ) -> Result<Proc, String> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| format!("{name}: empty command"))?;
        let wrapped = Path::new(TIMEOUT_BIN).is_file();
        let mut cmd = if wrapped {
            let mut c = Command::new(TIMEOUT_BIN);
            c.args(["--kill-after=5", &format!("{}s", budget.as_secs().max(1))]);
            c.arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args);
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match stderr {
            Some(path) => {
                let file =
                    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
                cmd.stderr(file);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawning {name} ({program}): {e}"))?;
        let stdout = child.stdout.take();
        let mut proc = Proc {
            name,
            pid: child.id(),
            child,
            stdout,
        };
        if wrapped {
            proc.pid = wrapped_child(proc.child.id())
                .ok_or_else(|| format!("{name}: no process appeared under timeout(1)"))?;
        }
        Ok(proc)
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM (which `timeout` forwards), then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("loadtest: {} ignored SIGTERM; killing it", self.name);
        signal(self.pid, "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to end by itself, and returns its stdout.
    pub fn wait_output(mut self, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        while self.exited().is_none() {
            if Instant::now() > deadline {
                return Err(format!("{} did not finish in time", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    pub fn cpu(&self) -> Result<CpuSample, String> {
        let (utime, stime) = cpu_ticks(self.pid)?;
        let (h_utime, h_stime) = cpu_ticks(std::process::id())?;
        Ok(CpuSample {
            process: utime + stime,
            process_system: stime,
            switches: context_switches(self.pid),
            harness: h_utime + h_stime,
            machine: machine_ticks()?,
        })
    }

    pub fn rss(&self) -> Result<Rss, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| format!("/proc/{}/status: {e}", self.pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Rss {
            peak_kib: field("VmHWM:"),
            now_kib: field("VmRSS:"),
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// The pid `timeout(1)` (pid `wrapper`) forked for its command.
fn wrapped_child(wrapper: u32) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// (utime, stime) of `pid`, all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command name (which may hold spaces), counted from 1 as
    // in proc(5): state is field 3, utime field 14, stime field 15.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(utime), Some(stime)) => Ok((utime, stime)),
        _ => Err(format!("/proc/{pid}/stat: no utime/stime")),
    }
}

/// Voluntary and involuntary context switches summed over the threads of `pid` (threads that
/// already ended are not counted).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// (busy, total) ticks of all CPUs from /proc/stat; idle and iowait are not busy.
fn machine_ticks() -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| e.to_string())?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// Share of all CPUs busy between two samples.
pub fn machine_busy(a: &CpuSample, b: &CpuSample) -> f64 {
    let total = b.machine.1.saturating_sub(a.machine.1);
    if total == 0 {
        0.0
    } else {
        b.machine.0.saturating_sub(a.machine.0) as f64 / total as f64
    }
}

/// `getconf CLK_TCK`, usually 100.
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
