//! Where the engine's CPU time goes: `perf record` samples the running
//! `keyhold serve` (user and kernel stacks, unwound from DWARF call frame
//! information, so the release build needs no frame pointers), inferno folds
//! the stacks and draws the flame graph, and each sample is put in one
//! category of the breakdown table.

use std::io::BufReader;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use inferno::collapse::Collapse as _;
use inferno::collapse::perf::Folder;

/// Samples per second and CPU; 499 keeps clear of the timer tick.
pub const FREQUENCY: &str = "499";

/// A `perf record` attached to a process until it is stopped.
pub struct Recording {
    perf: Child,
}

impl Recording {
    /// Samples process `pid` for `seconds` (perf stops by itself: it records
    /// for as long as its `sleep` runs).
    pub fn start(pid: u32, seconds: u64, data: &Path) -> anyhow::Result<Self> {
        let perf = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", FREQUENCY])
            .args(["--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .args(["--", "sleep"])
            .arg(seconds.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running perf (scripts/bench installs it: apt-get install linux-perf)")?;
        Ok(Self { perf })
    }

    /// Whether perf is still recording.
    pub fn running(&mut self) -> anyhow::Result<bool> {
        Ok(self.perf.try_wait()?.is_none())
    }

    /// Waits for perf to write its data, and folds the stacks it recorded.
    pub fn finish(self, data: &Path) -> anyhow::Result<Profile> {
        let out = self.perf.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "perf record failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut script = Command::new("perf")
            .args(["script", "-i"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running perf script")?;
        let stdout = script.stdout.take().context("perf script's output")?;
        let mut folded = Vec::new();
        Folder::default().collapse(BufReader::new(stdout), &mut folded)?;
        let status = script.wait()?;
        if !status.success() {
            bail!("perf script failed ({status})");
        }
        Profile::from_folded(&String::from_utf8_lossy(&folded))
    }
}

/// Folded stacks: `frame;frame;…;leaf weight` lines, root first. inferno
/// weighs each sample by its period, which for `cpu-clock` is nanoseconds.
pub struct Profile {
    stacks: Vec<(String, u64)>,
}

/// A breakdown's categories, each with the frames that put a sample in it.
/// A sample goes to the first category any of its frames matches, in the
/// list's order.
pub type Categories = &'static [Category];
/// A category's label, and the frames that put a sample in it.
pub type Category = (&'static str, &'static [&'static str]);

// Categories both breakdowns have, in both in this order.
const HAND_OFFS: Category = (
    "Thread hand-offs: waking and parking threads (futex, scheduler, epoll)",
    &[
        "futex",
        "__schedule",
        "finish_task_switch",
        "try_to_wake_up",
        "epoll_wait",
        "thread::functions::park",
        "Unparker",
        "sched_yield",
    ],
);
const SQLITE: Category = ("Store: SQLite executing statements", &["sqlite3"]);
const SQLX: Category = (
    "Store: drivers (sqlx for writes, rusqlite for reads in place), pool, row decoding",
    &[
        "sqlx_core",
        "sqlx_sqlite",
        "sqlx_postgres",
        "rusqlite",
        "keyhold_store",
    ],
);

/// The engine's categories (scenario 1): waiting and waking is charged
/// before the work it interrupts, so SQLite's share is SQLite's own
/// instructions.
pub const ENGINE: Categories = &[
    (
        "Durable commits: fsync of SQLite's write-ahead log",
        &["fsync", "fdatasync"],
    ),
    HAND_OFFS,
    SQLITE,
    SQLX,
    (
        "Keystore: RSA-OAEP wrap, sealing and opening key material",
        &["keyhold_keystore", "rsa::", "aes_gcm", "aes::"],
    ),
    (
        "AWS SDK: building, signing (SigV4) and parsing KMS requests",
        &["aws_sdk_kms", "aws_smithy", "aws_sigv4", "aws_runtime"],
    ),
    (
        "HTTP API: axum and hyper serving the benchmark's requests",
        &[
            "axum",
            "hyper::server",
            "keyhold_server::http",
            "keyhold_server::operations",
            "keyhold_server::routes",
        ],
    ),
    (
        "HTTP transport: hyper client connections and socket I/O",
        &["hyper", "tcp_", "sock_", "__sys_sendto", "__sys_recvfrom"],
    ),
    (
        "Job engine: keyhold's core and job runner",
        &["keyhold_core", "keyhold_server"],
    ),
    ("Async runtime: tokio scheduling and timers", &["tokio"]),
];

/// A listing's categories (scenario 4, one page of a listing per request):
/// hand-offs first, as for the engine, then the store, then what the server
/// does with the rows (the keystore's material check, the views, JSON), then
/// serving the request.
pub const LISTING: Categories = &[
    HAND_OFFS,
    SQLITE,
    SQLX,
    (
        "Keystore: whether each key's material is there",
        &["keyhold_keystore", "aes_gcm", "aes::", "polyval", "ghash"],
    ),
    (
        "JSON: serializing the response",
        &["serde_json", "serde::ser"],
    ),
    (
        "Views: each key as the API shows it (names, times, drift badge)",
        &["keyhold_server::views", "chrono::format"],
    ),
    (
        "Authentication: the session and settings behind the bearer token",
        &["keyhold_core::service::access", "Caller"],
    ),
    (
        "HTTP API: axum, hyper and keyhold's handlers and middleware",
        &[
            "axum",
            "hyper::server",
            "tower_http",
            "keyhold_server::http",
            "keyhold_server::operations",
            "keyhold_server::metrics",
            "keyhold_server::routes",
        ],
    ),
    (
        "HTTP transport: connections and socket I/O",
        &[
            "hyper",
            "tcp_",
            "sock_",
            "__sys_sendto",
            "__sys_recvfrom",
            "accept",
            "__x64_sys_close",
        ],
    ),
    (
        "Core: keyhold's services",
        &["keyhold_core", "keyhold_server"],
    ),
    ("Async runtime: tokio scheduling and timers", &["tokio"]),
];

const OTHER: &str = "Other: allocation, logging, kernel work not above";

impl Profile {
    fn from_folded(text: &str) -> anyhow::Result<Self> {
        let stacks = text
            .lines()
            .filter_map(|line| {
                let (stack, count) = line.rsplit_once(' ')?;
                Some((stack.to_owned(), count.parse().ok()?))
            })
            .collect::<Vec<_>>();
        if stacks.is_empty() {
            bail!("perf recorded no samples of keyhold serve");
        }
        Ok(Self { stacks })
    }

    /// CPU time sampled, in nanoseconds.
    pub fn sampled_ns(&self) -> u64 {
        self.stacks.iter().map(|(_, n)| n).sum()
    }

    /// Each of the engine's categories' share of the samples, in the order
    /// of [`ENGINE`], then the rest.
    pub fn breakdown(&self) -> Vec<(&'static str, f64)> {
        self.breakdown_by(ENGINE)
    }

    /// Each category's share of the samples, in the order of `categories`,
    /// then the rest.
    pub fn breakdown_by(&self, categories: Categories) -> Vec<(&'static str, f64)> {
        let mut counts = vec![0u64; categories.len() + 1];
        for (stack, n) in &self.stacks {
            let index = categories
                .iter()
                .position(|(_, frames)| frames.iter().any(|f| stack.contains(f)))
                .unwrap_or(categories.len());
            counts[index] += n;
        }
        let total = self.sampled_ns().max(1) as f64;
        categories
            .iter()
            .map(|(name, _)| *name)
            .chain([OTHER])
            .zip(counts)
            .map(|(name, n)| (name, n as f64 * 100.0 / total))
            .collect()
    }

    /// The flame graph as SVG.
    pub fn flame_graph(&self, title: &str) -> anyhow::Result<Vec<u8>> {
        let mut options = inferno::flamegraph::Options::default();
        options.title = title.to_owned();
        options.count_name = "ns".to_owned();
        let lines: Vec<String> = self
            .stacks
            .iter()
            .map(|(stack, n)| format!("{stack} {n}"))
            .collect();
        let mut svg = Vec::new();
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)?;
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_sample_goes_to_the_first_category_it_matches() {
        let profile = Profile::from_folded(
            "tokio::run;sqlx_sqlite::worker;sqlite3_step;pagerWalFrames;fsync 2\n\
             tokio::runtime::scheduler::run;sqlx_sqlite::worker;flume::recv;futex_wait 3\n\
             tokio::runtime::scheduler::run;sqlx_sqlite::worker;sqlite3_step 4\n\
             tokio::run;keyhold_keystore::wrap;rsa::oaep::encrypt 1\n\
             start_thread;malloc 10\n",
        )
        .unwrap();
        assert_eq!(profile.sampled_ns(), 20);
        let shares = profile.breakdown();
        assert_eq!(shares.len(), ENGINE.len() + 1);
        let share = |prefix: &str| {
            shares
                .iter()
                .find(|(name, _)| name.starts_with(prefix))
                .unwrap()
                .1
        };
        assert_eq!(share("Durable commits"), 10.0);
        assert_eq!(share("Thread hand-offs"), 15.0);
        assert_eq!(share("Store: SQLite"), 20.0);
        assert_eq!(share("Keystore"), 5.0);
        assert_eq!(share("Other"), 50.0);
        assert_eq!(shares.iter().map(|(_, s)| s).sum::<f64>(), 100.0);
    }

    #[test]
    fn a_flame_graph_is_svg() {
        let profile = Profile::from_folded("main;work 3\nmain;rest 1\n").unwrap();
        let svg = String::from_utf8(profile.flame_graph("t").unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains("work"), "{svg}");
    }

    #[test]
    fn no_samples_is_an_error() {
        assert!(Profile::from_folded("").is_err());
    }
}
