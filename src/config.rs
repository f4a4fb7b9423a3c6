//! Process settings from the command line, each with a `GHASI_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Kong external plugin server (MsgPack:1) hosting ghasi-jwt and ghasi-api-key-lookup.
#[derive(Debug, Parser)]
#[command(name = "ghasi-plugin-server", version)]
pub struct Settings {
    /// Unix socket Kong connects to (kong.conf `pluginserver_<name>_socket`).
    #[arg(long, env = "GHASI_SOCKET", default_value = "/usr/local/kong/ghasi.socket")]
    pub socket: PathBuf,

    /// Permissions of the socket file, octal (the nginx worker user must be able to connect).
    #[arg(long, env = "GHASI_SOCKET_MODE", default_value = "660", value_parser = parse_octal)]
    pub socket_mode: u32,

    /// Print the plugin descriptions Kong's query_cmd expects, then exit.
    #[arg(long)]
    pub dump: bool,

    /// With --dump: describe only this plugin (Kong 3.9+ registers only the first entry).
    #[arg(long, requires = "dump")]
    pub plugin: Option<String>,

    /// Serve Prometheus /metrics, /health and /ready on this TCP address (off when unset).
    #[arg(long, env = "GHASI_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// JWKS URLs to fetch at startup; `/ready` answers 503 until each has loaded
    /// (comma-separated; use the same URLs as the routes' `jwks_url`).
    #[arg(long, env = "GHASI_WARM_JWKS", value_delimiter = ',')]
    pub warm_jwks: Vec<String>,

    /// Log format on stderr (Kong logs the server's output at INFO level).
    #[arg(long, env = "GHASI_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// tracing filter, e.g. `info` or `ghasi_plugin_server=debug`.
    #[arg(long, env = "GHASI_LOG", default_value = "info")]
    pub log: String,

    /// Seconds an event may wait for Kong's next Step before it is reaped (Kong gives up
    /// after its 60 s socket read timeout).
    #[arg(long, env = "GHASI_EVENT_TIMEOUT_SECS", default_value_t = 120)]
    pub event_timeout_secs: u64,

    /// Seconds SIGTERM waits for in-flight events before exiting.
    #[arg(long, env = "GHASI_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// Largest MessagePack frame accepted from Kong; a larger one closes its connection.
    #[arg(long, env = "GHASI_MAX_FRAME_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Do not send the serverPid notification on new connections.
    #[arg(long, env = "GHASI_NO_SERVER_PID")]
    pub no_server_pid: bool,

    /// Valid API keys ghasi-api-key-lookup caches at most, per auth-service (process-wide;
    /// memory grows only as keys are cached, ≈ 100 bytes plus the identity's length each).
    #[arg(long, env = "GHASI_API_KEY_CACHE_ENTRIES", default_value_t = 1_000_000, value_parser = parse_cache_entries)]
    pub api_key_cache_entries: usize,

    /// Event loops ("shards") serving Kong's connections, each a thread that owns the
    /// connections handed to it (default: one per 4 CPUs this process may use, cgroup quota
    /// included, at least 1 and at most 8).
    #[arg(long, env = "GHASI_THREADS", value_parser = parse_threads)]
    pub threads: Option<usize>,
}

/// Most shards `--threads` accepts: far more than one Kong node's workers can keep busy.
pub const MAX_THREADS: usize = 64;

/// CPUs per default shard. Kong runs one nginx worker per CPU, and Kong's Lua side of a
/// round trip costs several times ours: measured through Kong's client, one shard serves the
/// RPCs of 4–6 nginx workers before it saturates its core, and under that load one shard costs
/// the least CPU per request (every extra shard adds idle wake-ups). One per 4 CPUs keeps
/// headroom; the cores are nginx's first.
pub const CPUS_PER_SHARD: usize = 4;

/// Default shard count cap (8 shards serve the RPCs of 32+ nginx workers).
pub const DEFAULT_THREADS_CAP: usize = 8;

/// One shard per [`CPUS_PER_SHARD`] CPUs, rounded up, at most [`DEFAULT_THREADS_CAP`].
pub fn default_shards(cpus: usize) -> usize {
    cpus.div_ceil(CPUS_PER_SHARD).clamp(1, DEFAULT_THREADS_CAP)
}

fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("not a number of threads: {e}"))?;
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(format!("must be between 1 and {MAX_THREADS}"));
    }
    Ok(n)
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("not an octal mode: {e}"))
}

fn parse_cache_entries(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("not a number of entries: {e}"))?;
    if n == 0 {
        return Err("must be at least 1: the valid-key cache cannot be switched off \
                    (to ask auth-service on every request, set the plugin's cache_ttl to 0)"
            .into());
    }
    if n > u32::MAX as usize {
        return Err(format!("at most {} entries", u32::MAX));
    }
    Ok(n)
}

impl Settings {
    /// Shards to run: `--threads`, else [`default_shards`] of the CPUs available to this
    /// process (`available_parallelism` honours the cgroup CPU quota and affinity on Linux).
    pub fn shard_count(&self) -> usize {
        self.threads.unwrap_or_else(|| default_shards(std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    /// Parses the command line. Kong 3.9's default query_cmd is `<bin> -dump` (one dash),
    /// which clap would read as `-d -u -m -p`, so the legacy spelling is rewritten first.
    pub fn from_args() -> Settings {
        Settings::parse_from(std::env::args_os().map(|a| if a == "-dump" { "--dump".into() } else { a }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        Settings::try_parse_from(std::iter::once("ghasi-plugin-server").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_api_key_cache_size_is_at_least_one_entry() {
        if std::env::var_os("GHASI_API_KEY_CACHE_ENTRIES").is_none() {
            assert_eq!(parse(&[]).unwrap().api_key_cache_entries, 1_000_000);
        }
        assert_eq!(parse(&["--api-key-cache-entries", "2000000"]).unwrap().api_key_cache_entries, 2_000_000);
        let err = parse(&["--api-key-cache-entries", "0"]).unwrap_err();
        assert!(err.contains("--api-key-cache-entries") && err.contains("must be at least 1"), "{err}");
        assert!(parse(&["--api-key-cache-entries", "many"]).is_err());
    }

    #[test]
    fn threads_is_between_one_and_the_maximum_and_defaults_to_one_per_four_cpus() {
        assert_eq!(parse(&["--threads", "3"]).unwrap().shard_count(), 3);
        for bad in ["0", "65", "two"] {
            let err = parse(&["--threads", bad]).unwrap_err();
            assert!(err.contains("--threads"), "{err}");
        }
        let by_cpus: Vec<usize> = [1, 2, 4, 5, 8, 16, 32, 64, 128].into_iter().map(default_shards).collect();
        assert_eq!(by_cpus, [1, 1, 1, 2, 2, 4, 8, 8, 8]);
        if std::env::var_os("GHASI_THREADS").is_none() {
            let cpus = std::thread::available_parallelism().unwrap().get();
            assert_eq!(parse(&[]).unwrap().shard_count(), default_shards(cpus));
        }
    }
}
