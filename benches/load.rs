//! Load benchmarks on this box, in three modes. Each prints its table and
//! writes it into docs/benchmarks.md between its markers, with the date,
//! the machine and the command (`--no-write`: print only).
//!
//! ```sh
//! ./scripts/bench-load.sh embedded 2500 10000 19000  # one `osago` process
//! ./scripts/bench-load.sh real 2500 10000            # 2 core-apps, 2 aggregators, PG, Valkey, tansu
//! ./scripts/bench-load.sh real 2500 --cores 4 40000 # --cores applies to the levels after it
//! ./scripts/bench-load.sh sse 10000 19000            # core-app's SSE against nginx + nchan
//! ./scripts/bench-load.sh real --steady 2500         # open arrivals keeping 2 500 streams open
//! ./scripts/bench-load.sh real --steady --admission-rate 40 2500 10000 40000  # overload
//! ```
//!
//! `--admission-rate R` (real mode) starts every core-app with
//! `--admission-rate R` and writes the overload table: sessions served
//! completely, admitted users dropped, and users refused at once (503 or
//! 429 with `Retry-After`, not counted as errors) with the refusal time.
//!
//! `--aggregator-set path=value` (real mode, repeatable) passes
//! `--set path=value` to every aggregator, e.g. `--aggregator-set
//! engine.poll.racers=2`: settings compared without editing their
//! defaults (add `--no-write` to keep the written tables).
//!
//! `--core-app-nice N` (real mode) sets every core-app thread's niceness
//! (negative needs root): with `-10` the cores it shares with the broker,
//! the aggregators and the generator run it first when it wakes, so its
//! own pipeline stage is measured as on a node where it has its own CPU
//! share (add `--no-write`: the other figures are not the headline's).
//!
//! `--steady` (embedded and real modes): open Poisson arrivals at
//! `N / (deadline + 5 s)` sessions per second, the rate that keeps N users
//! with an open quote stream, for a minute of warm-up and three measured
//! minutes; the row reports the sessions that arrived in those three.
//!
//! The script builds the release binaries and raises the open-file limit;
//! the generator (`bins/loadgen`) runs as child processes of at most 15 000
//! users each, connecting from 127.0.0.1..8.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::fanout::{FanoutReport, MISSED};
use loadgen::{proc_cpu, Report};
use osago_tests::processes::binary;
use osago_tests::stack::{InsurerSpec, Stack, StackOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Users (or subscribers) per generator process: under the 20 000 open
/// files one process may hold.
const PER_PROCESS: usize = 15_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Embedded,
    Real,
    Sse,
}

#[derive(Debug)]
struct Opts {
    mode: Mode,
    /// Users (subscribers), each with the core-app count given before it.
    levels: Vec<(usize, usize)>,
    cores: usize,
    events: usize,
    /// SSE: the time between published events.
    publish_every: Duration,
    fetch_wait: String,
    sim_speed: f64,
    deadline: Duration,
    broker_storage: &'static str,
    response_time: String,
    write: bool,
    command: String,
    /// The steady model: open arrivals instead of the burst.
    steady: bool,
    /// core-app's `--admission-rate` (real mode; the overload table).
    admission_rate: Option<f64>,
    /// sse mode: also measure core-app with a runtime of this many worker
    /// threads (`TOKIO_WORKER_THREADS`), as nginx runs one worker.
    server_threads: Option<usize>,
    /// Real mode: `--set` entries for every aggregator (`--aggregator-set
    /// engine.poll.racers=2`), to compare settings without editing their
    /// defaults; they are part of the command written with the table.
    aggregator_sets: Vec<String>,
    /// Real mode: every core-app thread's niceness (`--core-app-nice -10`),
    /// so the two cores it shares with the broker, the aggregators and the
    /// generator serve it first when it wakes: its own stages measured as
    /// on a node where it has its own CPU share.
    core_app_nice: Option<i32>,
    /// sse mode: also measure core-app with every stream asked for on a
    /// kept-alive connection (each subscriber gets `/health` first on it),
    /// as behind an ingress that pools its upstream connections.
    kept_alive: bool,
    /// sse mode: every server's run this many times, in rounds (ours, then
    /// nchan, then again), each row the run with the median delivery p99
    /// and every run's p99 beside it: one run's p99 moves by up to 200 ms
    /// on a shared box.
    repeat: usize,
    /// sse mode: also measure core-app with the streams over HTTP/2 (h2c,
    /// [`H2_STREAMS_PER_CONNECTION`] on each connection), as a proxy that
    /// talks HTTP/2 to its pods would send them.
    h2: bool,
}

/// Streams on each HTTP/2 connection in the sse mode's HTTP/2 row (hyper's
/// server takes 200 at once).
const H2_STREAMS_PER_CONNECTION: usize = 100;

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut opts = Opts {
        mode: Mode::Embedded,
        levels: Vec::new(),
        cores: 2,
        events: 20,
        publish_every: Duration::from_millis(100),
        fetch_wait: "10ms".to_owned(),
        sim_speed: 1.0,
        deadline: Duration::from_secs(60),
        broker_storage: "memory://tansu/",
        response_time: "50ms..200ms".to_owned(),
        write: true,
        command: String::new(),
        steady: false,
        admission_rate: None,
        server_threads: None,
        aggregator_sets: Vec::new(),
        core_app_nice: None,
        kept_alive: false,
        repeat: 1,
        h2: false,
    };
    let mut shown = Vec::new();
    let mut mode = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--bench" => continue,
            "--no-write" => opts.write = false,
            "--steady" => {
                opts.steady = true;
                shown.push("--steady".to_owned());
            }
            "--admission-rate" => {
                let v = value("--admission-rate")?;
                opts.admission_rate = Some(
                    v.parse()
                        .ok()
                        .filter(|r: &f64| r.is_finite() && *r > 0.0)
                        .ok_or("--admission-rate: a positive number")?,
                );
                shown.push(format!("--admission-rate {v}"));
            }
            "--aggregator-set" => {
                let v = value("--aggregator-set")?;
                if !v.contains('=') || v.starts_with('=') {
                    return Err(format!("--aggregator-set {v:?}: expected path=value"));
                }
                shown.push(format!("--aggregator-set {v}"));
                opts.aggregator_sets.push(v);
            }
            "--core-app-nice" => {
                let v = value("--core-app-nice")?;
                opts.core_app_nice = Some(
                    v.parse()
                        .ok()
                        .filter(|n: &i32| (-20..=19).contains(n))
                        .ok_or("--core-app-nice: a niceness from -20 to 19")?,
                );
                shown.push(format!("--core-app-nice {v}"));
            }
            "--h2" => {
                opts.h2 = true;
                shown.push("--h2".to_owned());
            }
            "--kept-alive" => {
                opts.kept_alive = true;
                shown.push("--kept-alive".to_owned());
            }
            "--repeat" => {
                let v = value("--repeat")?;
                opts.repeat = v
                    .parse()
                    .ok()
                    .filter(|k: &usize| (1..=9).contains(k))
                    .ok_or("--repeat: a number from 1 to 9")?;
                shown.push(format!("--repeat {v}"));
            }
            "--server-threads" => {
                let v = value("--server-threads")?;
                opts.server_threads = Some(
                    v.parse()
                        .ok()
                        .filter(|t: &usize| *t > 0)
                        .ok_or("--server-threads: a positive number")?,
                );
                shown.push(format!("--server-threads {v}"));
            }
            "--cores" => {
                let v = value("--cores")?;
                opts.cores = v.parse().map_err(|_| "--cores: a number".to_owned())?;
                shown.push(format!("--cores {v}"));
            }
            "--events" => {
                let v = value("--events")?;
                opts.events = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    // core-app keeps at most 32 unwritten events per
                    // stream (hub.rs); past that a stream that fell behind
                    // resynchronises and the bench would not measure lag.
                    .ok_or("--events: a number from 1 to 32")?;
                shown.push(format!("--events {v}"));
            }
            "--kafka-fetch-wait" => {
                opts.fetch_wait = value("--kafka-fetch-wait")?;
                shown.push(format!("--kafka-fetch-wait {}", opts.fetch_wait));
            }
            "--sim-speed" => {
                let v = value("--sim-speed")?;
                opts.sim_speed = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or("--sim-speed: a positive number")?;
                shown.push(format!("--sim-speed {v}"));
            }
            "--publish-every" => {
                let v = value("--publish-every")?;
                opts.publish_every = humantime::parse_duration(&v)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= Duration::from_secs(60))
                    .ok_or("--publish-every: a duration, over 0 and at most 60s")?;
                shown.push(format!("--publish-every {v}"));
            }
            "--deadline" => {
                let v = value("--deadline")?;
                opts.deadline =
                    humantime::parse_duration(&v).map_err(|e| format!("--deadline: {e}"))?;
                shown.push(format!("--deadline {v}"));
            }
            "--broker-storage" => {
                let v = value("--broker-storage")?;
                opts.broker_storage = match v.as_str() {
                    "memory" => "memory://tansu/",
                    "sqlite" => "sqlite://tansu.db",
                    _ => return Err("--broker-storage: memory or sqlite".to_owned()),
                };
                shown.push(format!("--broker-storage {v}"));
            }
            "--response-time" => {
                opts.response_time = value("--response-time")?;
                shown.push(format!("--response-time {}", opts.response_time));
            }
            "embedded" => mode = Some(Mode::Embedded),
            "real" => mode = Some(Mode::Real),
            "sse" => mode = Some(Mode::Sse),
            number => {
                let n = number
                    .parse()
                    .map_err(|_| format!("unknown argument {number:?}"))?;
                opts.levels.push((n, opts.cores));
                shown.push(number.to_owned());
            }
        }
    }
    opts.mode = mode.ok_or("name a mode: embedded, real or sse")?;
    if opts.levels.is_empty() {
        let n = if opts.mode == Mode::Sse {
            10_000
        } else {
            2_500
        };
        opts.levels.push((n, opts.cores));
    }
    let name = match opts.mode {
        Mode::Embedded => "embedded",
        Mode::Real => "real",
        Mode::Sse => "sse",
    };
    opts.command = format!("./scripts/bench-load.sh {name} {}", shown.join(" "));
    Ok(opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__sse-server") {
        sse_server::main(&args[1..]);
        return;
    }
    let opts = match parse_opts(&args) {
        Ok(opts) => opts,
        Err(problem) => {
            eprintln!("load bench: {problem}");
            std::process::exit(64);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (marker, table) = runtime.block_on(async {
        match opts.mode {
            Mode::Embedded => {
                let mut rows = Vec::new();
                for &(users, _) in &opts.levels {
                    rows.push(embedded(users, &opts).await);
                    println!("{}", rows.last().expect("row").markdown());
                }
                let marker = if opts.steady {
                    "load-embedded-steady"
                } else {
                    "load-embedded"
                };
                (marker, load_table(&rows))
            }
            Mode::Real => {
                let mut rows = Vec::new();
                let mut capacity = String::new();
                for &(users, cores) in &opts.levels {
                    rows.push(real(users, cores, &opts).await);
                    println!("{}", rows.last().expect("row").markdown());
                    let table = format!("{}{}", insurer_capacity(users), pipeline_stages(users));
                    println!("{table}");
                    capacity.push_str(&table);
                }
                if opts.admission_rate.is_some() {
                    let table = overload_table(&rows, opts.steady);
                    (
                        "load-real-overload",
                        format!("{table}\n{}{capacity}", load_table(&rows)),
                    )
                } else {
                    let marker = if opts.steady {
                        "load-real-steady"
                    } else {
                        "load-real"
                    };
                    (marker, format!("{}{capacity}", load_table(&rows)))
                }
            }
            Mode::Sse => {
                let mut rows = Vec::new();
                for &(n, _) in &opts.levels {
                    let mut runs: Vec<Vec<SseRow>> = Vec::new();
                    for round in 0..opts.repeat {
                        if opts.repeat > 1 {
                            eprintln!("== SSE at {n}: round {} of {}", round + 1, opts.repeat);
                        }
                        let done = sse(n, &opts).await;
                        for (i, row) in done.into_iter().enumerate() {
                            println!("{}", row.markdown());
                            match runs.get_mut(i) {
                                Some(same) => same.push(row),
                                None => runs.push(vec![row]),
                            }
                        }
                    }
                    rows.extend(runs.into_iter().map(SseRow::median_of));
                }
                ("load-sse", sse_table(&rows))
            }
        }
    });
    let section = format!(
        "Measured {} on {}.\n\n```sh\n{}\n```\n\n{table}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine(),
        opts.command.trim_end()
    );
    println!("\n{section}");
    if opts.write {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        match write_section(&docs, marker, &section) {
            Ok(()) => println!("written to docs/benchmarks.md ({marker})"),
            Err(problem) => eprintln!("load bench: not written: {problem}"),
        }
    }
}

/// Replaces what lies between `<!-- bench:{marker} -->` and
/// `<!-- /bench:{marker} -->` in `path`.
fn write_section(path: &Path, marker: &str, section: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let open = format!("<!-- bench:{marker} -->");
    let close = format!("<!-- /bench:{marker} -->");
    let start = text
        .find(&open)
        .ok_or_else(|| format!("no {open} marker"))?
        + open.len();
    let end = text[start..]
        .find(&close)
        .ok_or_else(|| format!("no {close} marker"))?
        + start;
    let updated = format!(
        "{}\n{}\n{}",
        &text[..start],
        section.trim_end(),
        &text[end..]
    );
    std::fs::write(path, updated).map_err(|e| e.to_string())
}

/// `2 cores (model), 24 GiB, Linux 6.1`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.0} GiB, Linux {}; generator and servers on the same box",
        kernel.trim()
    )
}

// ---------------------------------------------------------------- processes

/// Every process below `root` (children, grandchildren, ...), and `root`.
fn tree(root: u32) -> Vec<u32> {
    let mut parent_of = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, p)| **p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out
}

/// A `/proc/{pid}/status` or `smaps_rollup` field, KiB.
fn kib_field(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size of a process tree now, KiB (shared pages split
/// between the processes that map them, so a tree's sum is fair).
fn pss_kib(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .map(|pid| kib_field(pid, "smaps_rollup", "Pss:"))
        .sum()
}

/// A server role whose memory and CPU a run reports.
#[derive(Debug, Clone)]
struct Watched {
    name: String,
    root: u32,
    cpu_before: f64,
    peak_pss_kib: Arc<AtomicU64>,
}

impl Watched {
    fn new(name: impl Into<String>, root: u32) -> Self {
        let mut me = Self {
            name: name.into(),
            root,
            cpu_before: 0.0,
            peak_pss_kib: Arc::new(AtomicU64::new(0)),
        };
        me.cpu_before = me.cpu_now();
        me
    }

    fn cpu_now(&self) -> f64 {
        tree(self.root)
            .into_iter()
            .filter_map(proc_cpu)
            .sum::<f64>()
    }

    fn sample(&self) {
        self.peak_pss_kib
            .fetch_max(pss_kib(self.root), Ordering::Relaxed);
    }

    /// (name, peak PSS MiB of the tree, CPU seconds since `new`).
    fn usage(&self) -> (String, f64, f64) {
        self.sample();
        (
            self.name.clone(),
            self.peak_pss_kib.load(Ordering::Relaxed) as f64 / 1024.0,
            self.cpu_now() - self.cpu_before,
        )
    }
}

/// Samples the watched processes' memory every half second until dropped.
struct Sampler(tokio::task::JoinHandle<()>);

impl Sampler {
    fn start(watched: &[Watched]) -> Sampler {
        let watched = watched.to_vec();
        Sampler(tokio::spawn(async move {
            loop {
                let w = watched.clone();
                let _ =
                    tokio::task::spawn_blocking(move || w.iter().for_each(Watched::sample)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where each run leaves every server's final `/metrics`, for a look at
/// what the table summarises.
fn metrics_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-load");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The cap the real stack gives every insurer (the aggregator's default).
const INSURER_CAP: f64 = 20.0;

/// A histogram's `(le, cumulative count)` buckets summed over the saved
/// `/metrics` of every process whose file name starts with `prefix`.
fn merged_buckets(prefix: &str, metric: &str) -> Vec<(f64, f64)> {
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let files = std::fs::read_dir(metrics_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with(prefix));
    let series = format!("{metric}_bucket{{le=\"");
    for file in files {
        let text = std::fs::read_to_string(file.path()).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(series.as_str()) else {
                continue;
            };
            let Some((le, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            let (Ok(value), false) = (value.trim().parse::<f64>(), le.is_nan()) else {
                continue;
            };
            let entry = buckets.entry(le.to_bits()).or_insert((le, 0.0));
            entry.1 += value;
        }
    }
    let mut merged: Vec<(f64, f64)> = buckets.into_values().collect();
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    merged
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside
/// its bucket as Prometheus' `histogram_quantile` does; `None` if empty.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let share = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    None
}

/// The pipeline stage by stage, from the servers' histograms: the
/// aggregator's publish (event created -> broker ack), core-app's live feed
/// (event created -> consumed here, so the publish included) and its SSE
/// delivery (consumed -> frame handed to the connection).
fn pipeline_stages(users: usize) -> String {
    let aggregators = format!("real-{users}-aggregator-");
    let cores = format!("real-{users}-core-app-");
    let stages = [
        (
            "aggregator: event created -> broker ack (`osago_aggregator_publish_seconds`)",
            merged_buckets(&aggregators, "osago_aggregator_publish_seconds"),
        ),
        (
            "core-app: event created -> consumed from the live feed (`osago_core_live_feed_delay_seconds`; includes the row above)",
            merged_buckets(&cores, "osago_core_live_feed_delay_seconds"),
        ),
        (
            "core-app: consumed -> SSE frame handed to the connection (`osago_core_sse_delivery_seconds`)",
            merged_buckets(&cores, "osago_core_sse_delivery_seconds"),
        ),
    ];
    let mut out = format!(
        "\nPipeline stages at {} users (every server's histograms; one clock, one host):\n\n| stage | events | p50 ms | p99 ms |\n|---|---:|---:|---:|\n",
        thousands(users as f64)
    );
    for (name, buckets) in stages {
        let ms = |q: f64| {
            bucket_quantile(&buckets, q).map_or("-".to_owned(), |v| format!("{:.1}", v * 1000.0))
        };
        let events = buckets.last().map_or(0.0, |b| b.1);
        out.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            thousands(events),
            ms(0.5),
            ms(0.99)
        ));
    }
    out
}

/// Per insurer, from the aggregators' `/metrics` of the run with `users`
/// (steady: `target/bench-load/steady-{start,end}-<users>-aggregator-*.prom`,
/// the measured minutes; otherwise the final `real-<users>-aggregator-*`):
/// the partner's capacity as the physical limit (`cap / mean call time`
/// calls per second; a quote costs at least 2 calls, the POST and one poll
/// that finds it ready) and the run's efficiency against it.
fn insurer_capacity(users: usize) -> String {
    #[derive(Default)]
    struct Insurer {
        call_seconds: f64,
        calls: f64,
        quotes: f64,
        /// Applications answered without a call (`known_refusals`).
        spared: f64,
    }
    let mut insurers: BTreeMap<String, Insurer> = BTreeMap::new();
    // Steady runs: the counters at the measured time's end less those at
    // its start (`steady-end-...`, `steady-start-...`); otherwise the whole
    // run's, scraped at its end.
    let names = |prefix: &str| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(metrics_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().starts_with(prefix))
            .collect()
    };
    let start = names(&format!("steady-start-{users}-aggregator-"));
    let windowed = !start.is_empty();
    let files: Vec<(std::fs::DirEntry, f64)> = if windowed {
        names(&format!("steady-end-{users}-aggregator-"))
            .into_iter()
            .map(|f| (f, 1.0))
            .chain(start.into_iter().map(|f| (f, -1.0)))
            .collect()
    } else {
        names(&format!("real-{users}-aggregator-"))
            .into_iter()
            .map(|f| (f, 1.0))
            .collect()
    };
    for (file, sign) in files {
        let text = std::fs::read_to_string(file.path()).unwrap_or_default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let value = sign * value;
            let label = |name: &str| {
                let start = series.find(&format!("{name}=\""))? + name.len() + 2;
                let end = series[start..].find('"')? + start;
                Some(series[start..end].to_owned())
            };
            let Some(insurer) = label("insurer") else {
                continue;
            };
            let entry = insurers.entry(insurer).or_default();
            if series.starts_with("osago_aggregator_call_seconds_sum{") {
                entry.call_seconds += value;
            } else if series.starts_with("osago_aggregator_call_seconds_count{") {
                entry.calls += value;
            } else if series.starts_with("osago_aggregator_outcomes_total{")
                && label("outcome").as_deref() == Some("quoted")
            {
                entry.quotes += value;
            } else if series.starts_with("osago_aggregator_known_refusals_total{") {
                entry.spared += value;
            }
        }
    }
    let window = if windowed {
        "the measured minutes: counters at their end less at their start"
    } else {
        "the whole run's counters"
    };
    let mut out = format!(
        "\nPer insurer at {} users (both aggregators, {window}; cap {INSURER_CAP:.0} calls at once):\n\n\
         | insurer | mean call ms | ceiling calls/s (cap / mean) | ceiling quotes/s (2 calls each) | calls | refused without a call | quotes | calls per quote | quotes per insurer-call-second | share of the ceiling's efficiency |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        thousands(users as f64)
    );
    let (mut calls, mut quotes, mut spared) = (0.0, 0.0, 0.0);
    for (name, i) in &insurers {
        if i.calls == 0.0 {
            continue;
        }
        calls += i.calls;
        quotes += i.quotes;
        spared += i.spared;
        let mean = i.call_seconds / i.calls;
        let per_call_second = i.quotes / i.call_seconds.max(f64::MIN_POSITIVE);
        let calls_per_quote = i.calls / i.quotes.max(1.0);
        out.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} | {:.0} % |\n",
            mean * 1000.0,
            INSURER_CAP / mean,
            INSURER_CAP / mean / 2.0,
            thousands(i.calls),
            thousands(i.spared),
            thousands(i.quotes),
            if i.quotes > 0.0 {
                format!("{calls_per_quote:.1}")
            } else {
                "-".to_owned()
            },
            per_call_second,
            // At 2 calls per quote an insurer-call-second yields 1 / (2 x mean).
            100.0 * per_call_second * 2.0 * mean,
        ));
    }
    out.push_str(&format!(
        "| **all** | | | | {} | {} | {} | **{:.2}** | | |\n",
        thousands(calls),
        thousands(spared),
        thousands(quotes),
        calls / quotes.max(1.0),
    ));
    out
}

/// Sum of a Prometheus counter's samples (every label set) at `url`; the
/// whole exposition is kept as `target/bench-load/{keep_as}.prom`.
async fn scrape_sum(url: &str, metric: &str, keep_as: &str) -> f64 {
    let Ok(response) = reqwest::get(url).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    let _ = std::fs::write(metrics_dir().join(format!("{keep_as}.prom")), &text);
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_http_ok(url: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(url).await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer in {limit:?}");
}

fn free_port() -> u16 {
    osago_testkit::free_port()
}

// ---------------------------------------------------------------- load runs

/// One level of a load run.
#[derive(Debug)]
struct LoadRow {
    /// The level asked for (users, or users kept streaming when steady).
    users: usize,
    /// core-app processes (real stack).
    cores: Option<usize>,
    report: Report,
    polls: f64,
    processes: Vec<(String, f64, f64)>,
}

impl LoadRow {
    fn markdown(&self) -> String {
        let r = &self.report;
        let pair = |(a, b): (f64, f64)| format!("{} / {}", thousands(a), thousands(b));
        let cpu: f64 = self.processes.iter().map(|p| p.2).sum();
        let mut by_role: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, rss, cpu) in &self.processes {
            let role = if name.starts_with("sim-") {
                "sims"
            } else {
                name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            };
            by_role
                .entry(role.to_owned())
                .or_default()
                .push((*rss, *cpu));
        }
        let per_role = |pick: fn(&(f64, f64)) -> f64| {
            by_role
                .iter()
                .map(|(role, values)| {
                    let list: Vec<String> =
                        values.iter().map(|v| format!("{:.0}", pick(v))).collect();
                    format!("{role} {}", list.join("+"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (rss, cpus) = (per_role(|v| v.0), per_role(|v| v.1));
        format!(
            "| {}{} | {} ({:.2} %) | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.1} |",
            thousands(r.users as f64),
            self.cores
                .map(|c| format!(" ({c} core-apps)"))
                .unwrap_or_default(),
            r.errors,
            100.0 * r.errors as f64 / r.users.max(1) as f64,
            pair(r.end_to_end_ms),
            pair(r.pipeline_ms),
            pair(r.detection_ms),
            self.polls / r.quotes.max(1) as f64,
            pair(r.request_path_ms),
            pair(r.first_quote_ms),
            thousands(r.quotes as f64),
            rss,
            cpus,
            cpu * 1000.0 / r.users.max(1) as f64,
        )
    }
}

/// Overload: who was admitted, who was refused at once (503/429 with
/// Retry-After) and how fast, and whether everyone admitted was served.
fn overload_table(rows: &[LoadRow], steady: bool) -> String {
    let mut out = String::from(
        "| offered | sessions | served completely | admitted dropped | refused | refusal p50 / p99 ms | quotes | first quote p50 / p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let pair = |(a, b): (f64, f64)| format!("{} / {}", thousands(a), thousands(b));
    for row in rows {
        let r = &row.report;
        let offered = if steady {
            format!("{} users steady", thousands(row.users as f64))
        } else {
            format!("{} users burst", thousands(row.users as f64))
        };
        out.push_str(&format!(
            "| {offered} | {} | {} | {} | {} | {} | {} | {} |\n",
            thousands(r.users as f64),
            thousands(r.completed as f64),
            r.errors,
            thousands(r.refused as f64),
            pair(r.refusal_ms),
            thousands(r.quotes as f64),
            pair(r.first_quote_ms),
        ));
    }
    out
}

fn load_table(rows: &[LoadRow]) -> String {
    let mut out = String::from(
        "| users | errors | end-to-end p50 / p99 ms | pipeline p50 / p99 ms | detection p50 / p99 ms | polls per quote | request path p50 / p99 ms | first quote p50 / p99 ms | quotes | peak memory (PSS) per process, MiB | CPU s per process | server CPU ms per user |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|\n",
    );
    for row in rows {
        out.push_str(&row.markdown());
        out.push('\n');
    }
    for row in rows.iter().filter(|r| !r.report.sample_errors.is_empty()) {
        out.push_str(&format!(
            "\nErrors seen at {} users: {}.\n",
            thousands(row.report.users as f64),
            quoted(&row.report.sample_errors)
        ));
    }
    out
}

/// `` `a`, `b` ``.
fn quoted(errors: &[String]) -> String {
    errors
        .iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The steady model's warm-up and measured time: sessions arriving in the
/// first minute are not reported; then three minutes are.
const STEADY_WARM_UP: Duration = Duration::from_secs(60);
const STEADY_MEASURED: Duration = Duration::from_secs(180);

/// Runs the generator as child processes against `targets`; merges their
/// reports. A burst of `users` (every user in about 10 s), or, `steady`,
/// open Poisson arrivals at `users / (deadline + 5 s)` per second, the rate
/// that keeps `users` streams open (each lasts about the deadline, plus the
/// stream's grace), for the warm-up and the measured time.
async fn generate(targets: &[String], users: usize, steady: Option<Duration>) -> Report {
    let processes = users.div_ceil(PER_PROCESS);
    let ramp = (users as f64 / 10.0).max(250.0);
    let rate = steady.map_or(0.0, |deadline| {
        users as f64 / (deadline + Duration::from_secs(5)).as_secs_f64()
    });
    let started = Instant::now();
    let children: Vec<Child> = (0..processes)
        .map(|p| {
            let share = users / processes + usize::from(p < users % processes);
            Command::new(binary("loadgen"))
                .args(["--target", &targets.join(",")])
                .args(["--users", &share.to_string()])
                .args(["--ramp", &(ramp / processes as f64).to_string()])
                .args(["--arrival-rate", &(rate / processes as f64).to_string()])
                .args([
                    "--duration",
                    &format!("{}s", (STEADY_WARM_UP + STEADY_MEASURED).as_secs()),
                ])
                .args(["--warm-up", &format!("{}s", STEADY_WARM_UP.as_secs())])
                .args(["--source-ips", "8", "--timeout", "150s", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("starting loadgen (cargo build --release --workspace --bins)")
        })
        .collect();
    let mut parts = Vec::new();
    for child in children {
        let output = child.wait_with_output().await.expect("loadgen output");
        match serde_json::from_slice::<Report>(&output.stdout) {
            Ok(report) => parts.push(report),
            Err(e) => eprintln!("load bench: a generator gave no report: {e}"),
        }
    }
    let mut report = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Report::merge(&parts)
    };
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Embedded mode: one release `osago` process.
async fn embedded(users: usize, opts: &Opts) -> LoadRow {
    let logs = tempfile::tempdir().expect("log dir");
    let port = free_port();
    let log = std::fs::File::create(logs.path().join("osago.log")).expect("log");
    let admin_port = free_port();
    let mut server = Command::new(binary("osago"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--no-client-limits", "--heartbeat", "15s"])
        .args(["--sim-speed", &opts.sim_speed.to_string()])
        .args(["--sim-response-time", &opts.response_time])
        .args([
            "--insurer-deadline",
            &format!("{}ms", opts.deadline.as_millis()),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("starting osago (cargo build --release --workspace --bins)");
    let base = format!("http://127.0.0.1:{port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_http_ok(&format!("{admin}/health"), Duration::from_secs(30)).await;
    let watched = Watched::new("osago", server.id().expect("running"));
    eprintln!("== embedded, {users} users");
    let sampler = Sampler::start(std::slice::from_ref(&watched));
    let report = generate(
        std::slice::from_ref(&base),
        users,
        opts.steady.then_some(opts.deadline),
    )
    .await;
    drop(sampler);
    let polls = scrape_sum(
        &format!("{admin}/metrics"),
        "osago_aggregator_polls_total",
        &format!("embedded-{users}-osago"),
    )
    .await;
    let row = LoadRow {
        users,
        cores: None,
        report,
        polls,
        processes: vec![watched.usage()],
    };
    let _ = server.kill().await;
    row
}

/// Sets the niceness of every thread of `pid` (Linux keeps one per
/// thread; threads started later inherit their creator's).
fn renice_threads(pid: u32, nice: i32) {
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let status = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p"])
        .args(&tids)
        .stdout(Stdio::null())
        .status()
        .expect("renice runs");
    assert!(
        status.success(),
        "renice -n {nice} of core-app {pid}'s threads failed (a negative niceness needs root)"
    );
}

/// Real-stack mode: several core-apps, 2 aggregators, PostgreSQL, Valkey
/// and tansu, eight simulated insurers, each its own process.
async fn real(users: usize, cores: usize, opts: &Opts) -> LoadRow {
    let stack = Stack::start(StackOptions {
        insurers: InsurerSpec::lineup(),
        deadline: opts.deadline,
        sim_speed: opts.sim_speed,
        static_membership: false,
        cores,
        heartbeat: Duration::from_secs(15),
        broker_proxy: false,
        extra_args: vec!["--kafka-fetch-wait".to_owned(), opts.fetch_wait.clone()],
        aggregator_args: opts
            .aggregator_sets
            .iter()
            .flat_map(|set| ["--set".to_owned(), set.clone()])
            .collect(),
        core_app_args: opts
            .admission_rate
            .map(|rate| vec!["--admission-rate".to_owned(), rate.to_string()])
            .unwrap_or_default(),
        broker_storage: opts.broker_storage,
        sim_response_time: opts.response_time.clone(),
        valkey_cluster: false,
    })
    .await;
    if let Some(nice) = opts.core_app_nice {
        for core in &stack.cores {
            renice_threads(core.pid().expect("running"), nice);
        }
    }
    let mut watched = Vec::new();
    for (i, core) in stack.cores.iter().enumerate() {
        watched.push(Watched::new(
            format!("core-app-{i}"),
            core.pid().expect("running"),
        ));
    }
    for (i, aggregator) in stack.aggregators.iter().enumerate() {
        watched.push(Watched::new(
            format!("aggregator-{i}"),
            aggregator.pid().expect("running"),
        ));
    }
    for (id, (sim, _)) in &stack.sims {
        watched.push(Watched::new(format!("sim-{id}"), sim.pid()));
    }
    watched.push(Watched::new("tansu", stack.tansu.pid().expect("running")));
    watched.push(Watched::new("valkey", stack.valkey.pid().expect("running")));
    watched.push(Watched::new(
        "postgres",
        stack.postgres.pid().expect("running"),
    ));
    eprintln!("== real stack, {users} users, {cores} core-apps");
    let targets: Vec<String> = stack.cores.iter().map(|c| c.base()).collect();
    // Steady: the aggregators' counters at the warm-up's end and at the
    // measured time's (arrivals still steady at both), so that the
    // per-insurer table gives the measured time's rates: not the first
    // minute of two fresh aggregators, which have learned nothing yet,
    // nor the drain after the last arrival; in flight at either end is
    // cut alike.
    for file in std::fs::read_dir(metrics_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if file.file_name().to_string_lossy().starts_with("steady-") {
            let _ = std::fs::remove_file(file.path());
        }
    }
    let window = opts.steady.then(|| {
        let admins: Vec<String> = stack.aggregators.iter().map(|a| a.admin()).collect();
        tokio::spawn(async move {
            for (wait, end) in [(STEADY_WARM_UP, "start"), (STEADY_MEASURED, "end")] {
                tokio::time::sleep(wait).await;
                for (i, admin) in admins.iter().enumerate() {
                    scrape_sum(
                        &format!("{admin}/metrics"),
                        "",
                        &format!("steady-{end}-{users}-aggregator-{i}"),
                    )
                    .await;
                }
            }
        })
    });
    let sampler = Sampler::start(&watched);
    let report = generate(&targets, users, opts.steady.then_some(opts.deadline)).await;
    drop(sampler);
    if let Some(window) = window {
        let _ = window.await;
    }
    let mut polls = 0.0;
    for (i, aggregator) in stack.aggregators.iter().enumerate() {
        polls += scrape_sum(
            &format!("{}/metrics", aggregator.admin()),
            "osago_aggregator_polls_total",
            &format!("real-{users}-aggregator-{i}"),
        )
        .await;
    }
    for (i, core) in stack.cores.iter().enumerate() {
        scrape_sum(
            &format!("{}/metrics", core.admin()),
            "",
            &format!("real-{users}-core-app-{i}"),
        )
        .await;
    }
    if opts.steady {
        // The polls metric covers the warm-up's sessions too, the quotes
        // only the measured ones: count the measured share of the polls
        // (arrivals are steady, so in expectation their share of the time).
        polls *= STEADY_MEASURED.as_secs_f64() / (STEADY_WARM_UP + STEADY_MEASURED).as_secs_f64();
    }
    LoadRow {
        users,
        cores: Some(cores),
        report,
        polls,
        processes: watched.iter().map(Watched::usage).collect(),
    }
}

// ---------------------------------------------------------------- SSE fan-out

/// One server's figures in the SSE comparison.
#[derive(Debug)]
struct SseRow {
    server: String,
    subscribers: usize,
    report: FanoutReport,
    kib_per_subscriber: f64,
    cpu_seconds: f64,
    /// Delivery p99 of every run this row stands for (ms), in run order.
    p99_runs: Vec<f64>,
}

impl SseRow {
    /// Of one server's runs, the run with the median delivery p99 (the
    /// lower middle one of an even count), carrying every run's p99.
    fn median_of(mut runs: Vec<SseRow>) -> SseRow {
        let p99_runs: Vec<f64> = runs.iter().map(|r| r.report.lag_ms(0.99)).collect();
        runs.sort_by(|a, b| a.report.lag_ms(0.99).total_cmp(&b.report.lag_ms(0.99)));
        let middle = (runs.len() - 1) / 2;
        let mut row = runs.swap_remove(middle);
        row.p99_runs = p99_runs;
        row
    }

    fn markdown(&self) -> String {
        let r = &self.report;
        let runs = if self.p99_runs.is_empty() {
            format!("{:.0}", r.lag_ms(0.99))
        } else {
            self.p99_runs
                .iter()
                .map(|p| format!("{p:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} / {:.1} / {:.1} | {} | {:.2} |",
            self.server,
            thousands(self.subscribers as f64),
            thousands(r.connected as f64),
            r.errors,
            self.kib_per_subscriber,
            r.lag_ms(0.5),
            r.lag_ms(0.99),
            r.lag_ms(1.0),
            runs,
            self.cpu_seconds,
        )
    }
}

fn sse_table(rows: &[SseRow]) -> String {
    let mut out = String::from(
        "| server | subscribers | connected | errors | memory (PSS) per idle subscriber, KiB | delivery p50 / p99 / max ms | p99 of each run, ms | server CPU s (delivery) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&row.markdown());
        out.push('\n');
    }
    for row in rows.iter().filter(|r| !r.report.sample_errors.is_empty()) {
        out.push_str(&format!(
            "\nErrors seen by {} at {} subscribers: {}.\n",
            row.server,
            thousands(row.subscribers as f64),
            quoted(&row.report.sample_errors)
        ));
    }
    out
}

/// A subscriber process, its output, and the subscribers and events it
/// was given (counted as missed if it gives no report).
type Subscriber = (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    (usize, usize),
);

/// Starts subscriber processes on `url`; returns them once each reports
/// its streams open, with how many are open.
async fn subscribers(
    url: &str,
    token: Option<&str>,
    (first, h2): (Option<&str>, usize),
    n: usize,
    events: usize,
) -> (Vec<Subscriber>, usize) {
    let processes = n.div_ceil(PER_PROCESS);
    let mut children = Vec::new();
    for p in 0..processes {
        let share = n / processes + usize::from(p < n % processes);
        let mut command = Command::new(binary("loadgen"));
        if let Some(token) = token {
            command.env("LOADGEN_TOKEN", token);
        }
        command.args(["subscribe", "--url", url]);
        if let Some(first) = first {
            command.args(["--first", first]);
        }
        if h2 > 0 {
            command.args(["--h2-streams-per-connection", &h2.to_string()]);
        }
        let mut child = command
            .args(["--subscribers", &share.to_string()])
            .args(["--events", &events.to_string()])
            .args(["--connect-rate", &(4000 / processes).to_string()])
            .args(["--source-ips", "8", "--timeout", "300s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting loadgen subscribe");
        let stdout = child.stdout.take().expect("piped");
        children.push((child, BufReader::new(stdout).lines(), (share, events)));
    }
    let mut open = 0;
    for (_, lines, _) in &mut children {
        let line = lines.next_line().await.ok().flatten().unwrap_or_default();
        open += line
            .strip_prefix("connected ")
            .and_then(|k| k.parse::<usize>().ok())
            .unwrap_or(0);
    }
    (children, open)
}

/// Waits for the subscribers' reports.
async fn reports(children: Vec<Subscriber>) -> FanoutReport {
    let mut parts = Vec::new();
    for (mut child, mut lines, (share, events)) in children {
        let mut last = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            last = line;
        }
        let _ = child.wait().await;
        match serde_json::from_str::<FanoutReport>(&last) {
            Ok(report) => parts.push(report),
            Err(e) => {
                // Its subscribers failed and their events were missed:
                // counted as such, not left out of the run.
                let error = format!("a subscriber process gave no report: {e}");
                eprintln!("load bench: {error}");
                parts.push(FanoutReport {
                    subscribers: share,
                    errors: share,
                    lags_us: vec![MISSED; share * events],
                    sample_errors: vec![error],
                    ..FanoutReport::default()
                });
            }
        }
    }
    FanoutReport::merge(parts)
}

/// The SSE comparison at `n` subscribers: core-app's stream (its real HTTP
/// server, hub and SSE code on the in-memory bus, one request watched by
/// every subscriber, events published on the bus as the aggregator would),
/// then nginx + nchan (one channel, events published over HTTP).
async fn sse(n: usize, opts: &Opts) -> Vec<SseRow> {
    let events = (opts.events, opts.publish_every);
    let mut rows = vec![sse_ours(n, events, None, Connections::Own).await];
    if let Some(threads) = opts.server_threads {
        rows.push(sse_ours(n, events, Some(threads), Connections::Own).await);
    }
    if opts.kept_alive {
        rows.push(sse_ours(n, events, None, Connections::KeptAlive).await);
    }
    if opts.h2 {
        rows.push(sse_ours(n, events, None, Connections::H2).await);
    }
    match nchan_setup() {
        Ok(setup) => {
            rows.push(sse_nchan(n, events, setup.clone(), false).await);
            if opts.h2 {
                rows.push(sse_nchan(n, events, setup, true).await);
            }
        }
        Err(problem) => eprintln!("load bench: nchan skipped: {problem}"),
    }
    rows
}

/// How the subscribers of a core-app row reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connections {
    /// HTTP/1.1, the stream first on a connection of its own.
    Own,
    /// HTTP/1.1, the stream asked for after a `GET /health` on its
    /// connection.
    KeptAlive,
    /// HTTP/2 without TLS, [`H2_STREAMS_PER_CONNECTION`] streams on each
    /// connection.
    H2,
}

async fn sse_ours(
    n: usize,
    (events, every): (usize, Duration),
    threads: Option<usize>,
    via: Connections,
) -> SseRow {
    let port = free_port();
    let exe = std::env::current_exe().expect("own path");
    let mut server = Command::new(exe);
    if let Some(threads) = threads {
        // tokio's runtime reads it for its worker count.
        server.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    let mut server = server
        .args(["__sse-server", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the SSE server");
    let base = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{base}/health"), Duration::from_secs(30)).await;
    let created = osago_tests::post_sample(
        &reqwest::Client::new(),
        &format!("{base}/api/osago/requests"),
    )
    .await;
    let request_id = created["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned();
    let url = format!(
        "{base}{}",
        created["stream_url"].as_str().expect("stream_url")
    );
    let pid = server.id().expect("running");
    let token = created["access_token"].as_str().map(str::to_owned);
    let first = (via == Connections::KeptAlive).then(|| format!("{base}/health"));
    let h2 = if via == Connections::H2 {
        H2_STREAMS_PER_CONNECTION
    } else {
        0
    };
    let result = fan_out(
        n,
        events,
        &url,
        token.as_deref(),
        (first.as_deref(), h2),
        pid,
        async |count: usize| {
            let stdin = server.stdin.as_mut().expect("piped");
            stdin
                .write_all(
                    format!("publish {request_id} {count} {}\n", every.as_millis()).as_bytes(),
                )
                .await
                .expect("telling the server to publish");
            stdin.flush().await.expect("flush");
        },
    )
    .await;
    let _ = server.kill().await;
    SseRow {
        server: match (threads, via) {
            (_, Connections::KeptAlive) => {
                "core-app (ours), streams on kept-alive connections".to_owned()
            }
            (_, Connections::H2) => format!(
                "core-app (ours), HTTP/2, {H2_STREAMS_PER_CONNECTION} streams per connection"
            ),
            (Some(1), _) => "core-app (ours), 1 worker thread".to_owned(),
            (Some(t), _) => format!("core-app (ours), {t} worker threads"),
            (None, _) => "core-app (ours)".to_owned(),
        },
        subscribers: n,
        ..result
    }
}

/// Connects the subscribers (`first`: the URL each gets before its
/// stream; `h2`: streams per HTTP/2 connection, 0 for HTTP/1.1), measures
/// memory, publishes, collects.
async fn fan_out(
    n: usize,
    events: usize,
    url: &str,
    token: Option<&str>,
    (first, h2): (Option<&str>, usize),
    server_root: u32,
    publish: impl AsyncFnOnce(usize),
) -> SseRow {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = pss_kib(server_root);
    eprintln!("== SSE, {n} subscribers on {url}");
    let (children, open) = subscribers(url, token, (first, h2), n, events).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pss_kib(server_root);
    let watched = Watched::new("server", server_root);
    publish(events).await;
    let report = reports(children).await;
    SseRow {
        server: String::new(),
        subscribers: n,
        kib_per_subscriber: after.saturating_sub(before) as f64 / open.max(1) as f64,
        cpu_seconds: watched.usage().2,
        p99_runs: Vec::new(),
        report,
    }
}

#[derive(Clone)]
struct NchanSetup {
    nginx: PathBuf,
    module: PathBuf,
}

fn nchan_setup() -> Result<NchanSetup, String> {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no nginx (Debian: nginx-light or nginx, and libnginx-mod-nchan; scripts/install-test-services.sh --bench)")?;
    let module = ["/usr/lib/nginx/modules/ngx_nchan_module.so"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no nchan module (Debian: libnginx-mod-nchan)")?;
    Ok(NchanSetup { nginx, module })
}

/// nchan's row; `h2`: the subscribers over HTTP/2 without TLS
/// ([`H2_STREAMS_PER_CONNECTION`] on each connection) on a listener of
/// their own (nginx 1.22's cleartext `http2` listener speaks only HTTP/2),
/// the publisher and the health check on the HTTP/1.1 one.
async fn sse_nchan(
    n: usize,
    (events, every): (usize, Duration),
    setup: NchanSetup,
    h2: bool,
) -> SseRow {
    let dir = tempfile::tempdir().expect("nginx dir");
    let port = free_port();
    let h2_port = std::iter::repeat_with(free_port)
        .find(|&p| p != port)
        .expect("a second free port");
    let h2_listen = if h2 {
        format!("listen 127.0.0.1:{h2_port} http2 backlog=4096;")
    } else {
        String::new()
    };
    let root_user = if osago_testkit_uid() == 0 {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        r#"load_module {module};
{root_user}
worker_processes 1;
worker_rlimit_nofile 65536;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 65536; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    {h2_listen}
    location = /health {{ return 200 "ok"; }}
    location = /pub {{ nchan_publisher; nchan_channel_id bench; }}
    location = /sub {{ nchan_subscriber eventsource; nchan_channel_id bench; }}
  }}
}}
"#,
        module = setup.module.display(),
        dir = dir.path().display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let mut nginx = Command::new(&setup.nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting nginx");
    let base = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{base}/health"), Duration::from_secs(30)).await;
    let pid = nginx.id().expect("running");
    let http = reqwest::Client::new();
    let publish_url = format!("{base}/pub");
    let result = fan_out(
        n,
        events,
        &if h2 {
            format!("http://127.0.0.1:{h2_port}/sub")
        } else {
            format!("{base}/sub")
        },
        None,
        (None, if h2 { H2_STREAMS_PER_CONNECTION } else { 0 }),
        pid,
        async |count: usize| {
            // Open loop, as core-app's publisher: each event goes out at
            // its time, stamped with that time, whether or not nginx has
            // answered the ones before. nchan answers a publish only once
            // it has written the message to its subscribers (at 19 000
            // subscribers, 0.5-1.5 s after it was sent on the AMD
            // machine), so waiting for each answer spaced the events by
            // nchan's own fan-out instead of 100 ms.
            let start = tokio::time::Instant::now();
            let start_wall = chrono::Utc::now();
            let mut posts = Vec::with_capacity(count);
            for version in 1..=count {
                let at = every * (version as u32 - 1);
                tokio::time::sleep_until(start + at).await;
                // The same shape and size as core-app's row, so both sides
                // carry (and the subscribers parse) the same bytes.
                let now = start_wall + chrono::Duration::from_std(at).expect("short");
                let body = serde_json::json!({
                    "request_id": uuid::Uuid::new_v4(),
                    "insurer_id": "bench",
                    "version": version,
                    "insurers_total": 2,
                    "status": "pending",
                    "quote": null,
                    "reason": null,
                    "error_kind": null,
                    "occurred_at": now,
                    "started_at": now,
                })
                .to_string();
                let post = http.post(&publish_url).body(body).send();
                posts.push(tokio::spawn(async move {
                    let _ = post.await;
                    start.elapsed().saturating_sub(at)
                }));
            }
            let mut answered = Vec::with_capacity(posts.len());
            for post in posts {
                answered.extend(post.await.ok());
            }
            answered.sort_unstable();
            if let (Some(median), Some(last)) = (answered.get(answered.len() / 2), answered.last())
            {
                eprintln!(
                    "load bench: nchan answered its publishes {:.0} ms (median) and {:.0} ms (last) after each was sent",
                    median.as_secs_f64() * 1000.0,
                    last.as_secs_f64() * 1000.0
                );
            }
        },
    )
    .await;
    // nginx's master stops its worker on QUIT; kill_on_drop is the fallback.
    let _ = std::process::Command::new("kill")
        .args(["-QUIT", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(10), nginx.wait()).await;
    SseRow {
        server: if h2 {
            format!("nginx + nchan, HTTP/2, {H2_STREAMS_PER_CONNECTION} streams per connection")
        } else {
            "nginx + nchan".to_owned()
        },
        subscribers: n,
        ..result
    }
}

fn osago_testkit_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// core-app's HTTP server, hub and SSE streams on the in-memory bus and
/// stores (no aggregator), in its own process so its memory is its own.
/// `publish <request_id> <count> <interval_ms>` on stdin publishes `count`
/// pending rows of one insurer for that request, stamped as they go out,
/// as the aggregator would publish them.
mod sse_server {
    use std::sync::Arc;
    use std::time::Duration;

    use osago_core::events::{InsurerEvent, QuoteEvent, QuoteStatus};
    use osago_core::ports::QuoteSink;
    use osago_core::{EventId, InsurerId, RequestId, SystemClock};
    use osago_transport::memory::{
        MemoryBus, MemoryRateLimiter, MemoryReadModel, MemoryRequestStore,
    };
    use prometheus_client::registry::Registry;
    use tokio::io::AsyncBufReadExt;

    pub fn main(args: &[String]) {
        let port: u16 = args
            .first()
            .and_then(|p| p.parse().ok())
            .expect("__sse-server PORT");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let config = core_app::Config {
                request_deadline: Duration::from_secs(600),
                ..core_app::Config::default()
            };
            let config = config.without_client_limits();
            let bus = MemoryBus::new();
            let requests = MemoryRequestStore::new(config.retention);
            let deps = core_app::Deps {
                requests: Arc::new(requests.clone()),
                outbox: Arc::new(requests),
                publisher: Arc::new(bus.clone()),
                outcomes: Arc::new(bus.clone()),
                live: Arc::new(bus.clone()),
                read_model: Arc::new(MemoryReadModel::new(config.retention)),
                clock: Arc::new(SystemClock),
                health: Vec::new(),
                limiter: Arc::new(MemoryRateLimiter::new()),
            };
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind");
            tokio::spawn(publisher(bus));
            core_app::run(
                listener,
                None,
                deps,
                config,
                Registry::default(),
                std::future::pending(),
            )
            .await
            .expect("core-app");
        });
    }

    async fn publisher(bus: MemoryBus) {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let insurer = InsurerId::new("bench").expect("insurer id");
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ["publish", request_id, count, every_ms] = words[..] else {
                continue;
            };
            let (Ok(request_id), Ok(count), Ok(every_ms)) = (
                request_id.parse::<RequestId>(),
                count.parse::<u32>(),
                every_ms.parse::<u64>(),
            ) else {
                continue;
            };
            // Each event stamped with the time it is due, not the time
            // this task got to it: a publisher held up by the server's own
            // work (it shares the server's runtime) counts as lag, as it
            // does for nchan's publisher in the bench's own process.
            let start = tokio::time::Instant::now();
            let start_wall = chrono::Utc::now();
            for version in 1..=count {
                let at = Duration::from_millis(every_ms) * (version - 1);
                tokio::time::sleep_until(start + at).await;
                let now = start_wall + chrono::Duration::from_std(at).expect("short");
                let event = InsurerEvent::Quote(QuoteEvent {
                    event_id: EventId::random(),
                    request_id,
                    insurer_id: insurer.clone(),
                    occurred_at: now,
                    deadline_at: now + chrono::Duration::minutes(10),
                    version,
                    // Two insurers, one of them silent: the stream never
                    // completes while rows keep coming.
                    insurers_total: 2,
                    status: QuoteStatus::Pending,
                    quote: None,
                    reason: None,
                });
                let _ = bus.publish(&event).await;
            }
        }
    }
}
