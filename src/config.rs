//! Process settings from the command line, each with a `GHASI_*` environment variable.

use std::net::{SocketAddr, ToSocketAddrs};
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

    /// GET each http://HOST:PORT/PATH URL and exit 0 only if every one answers 200 (a
    /// Kubernetes exec readiness probe covering Kong's /status/ready and our /ready).
    #[arg(long, value_delimiter = ',', conflicts_with = "dump")]
    pub probe: Vec<String>,

    /// Serve Prometheus /metrics, /health and /ready on this TCP address, `IP:PORT` or
    /// `HOST:PORT` (resolved at start; off when unset).
    #[arg(long, env = "GHASI_METRICS_LISTEN", value_parser = parse_listen_addr)]
    pub metrics_listen: Option<SocketAddr>,

    /// JWKS URLs to fetch at startup; `/ready` answers 503 until each has loaded
    /// (comma-separated absolute http(s) URLs; use the same URLs as the routes' `jwks_url`).
    #[arg(long, env = "GHASI_WARM_JWKS", value_delimiter = ',', value_parser = parse_http_url)]
    pub warm_jwks: Vec<String>,

    /// Log format on stderr (Kong logs the server's output at INFO level).
    #[arg(long, env = "GHASI_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Also append every log line to this file (same format; reopened on SIGHUP for
    /// logrotate). Kong shows stderr only at its `log_level = info`; the file always has it.
    #[arg(long, env = "GHASI_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// tracing filter, e.g. `info` or `ghasi_plugin_server=debug` (checked strictly: a typo
    /// must not silently switch logging off).
    #[arg(long, env = "GHASI_LOG", default_value = "info", value_parser = parse_log_filter)]
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

    /// Bytes buffered for incomplete frames across all connections; a connection whose
    /// partial frame would exceed it is closed (at least --max-frame-bytes).
    #[arg(long, env = "GHASI_BUFFER_BUDGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub buffer_budget_bytes: usize,

    /// Create the socket's directory when it does not exist (by default a missing directory
    /// is an error: it is usually a typo, and Kong would never find the socket).
    #[arg(long, env = "GHASI_CREATE_SOCKET_DIR")]
    pub create_socket_dir: bool,

    /// Do not send the serverPid notification on new connections.
    #[arg(long, env = "GHASI_NO_SERVER_PID")]
    pub no_server_pid: bool,

    /// Valid API keys ghasi-api-key-lookup caches at most, per auth-service (process-wide;
    /// memory grows only as keys are cached, ≈ 100 bytes plus the identity's length each).
    #[arg(long, env = "GHASI_API_KEY_CACHE_ENTRIES", default_value_t = 1_000_000, value_parser = parse_cache_entries)]
    pub api_key_cache_entries: usize,

    /// Redis to subscribe to for revocation messages, e.g. `redis://:password@redis:6379/0` or
    /// `rediss://…` (TLS); off when unset. Prefer the environment variable: it holds a password.
    #[arg(long, env = "GHASI_REVOCATION_REDIS_URL", hide_env_values = true)]
    pub revocation_redis_url: Option<String>,

    /// Pub/sub channel auth-service publishes revocation messages on.
    #[arg(long, env = "GHASI_REVOCATION_CHANNEL", default_value = crate::revocation::DEFAULT_CHANNEL)]
    pub revocation_channel: String,

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

/// `IP:PORT`, or `HOST:PORT` resolved now (an IPv4 address first: `localhost` usually
/// resolves to both, and probes and scrapers try IPv4 first).
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("expected HOST:PORT or IP:PORT, got `{s}`"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("expected HOST:PORT or IP:PORT, got `{s}`"));
    }
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().map_err(|e| format!("cannot resolve `{host}`: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

/// An absolute `http://` or `https://` URL with a host (an empty value, e.g. an empty
/// `GHASI_WARM_JWKS`, is allowed and ignored).
fn parse_http_url(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    let url = reqwest::Url::parse(s).map_err(|e| format!("`{s}` is not an absolute http(s) URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` is not an absolute http(s) URL"));
    }
    Ok(s.to_owned())
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A tracing filter whose every directive names a level: `LEVEL` or `TARGET=LEVEL`.
/// `EnvFilter` itself would read a bare word such as `debgu` as a *target* at every level,
/// i.e. everything else off.
fn parse_log_filter(s: &str) -> Result<String, String> {
    let is_level = |l: &str| LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l.trim()));
    for directive in s.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !is_level(level) {
            return Err(format!(
                "`{directive}` does not name a level; use LEVEL or TARGET=LEVEL with LEVEL one of {}",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("invalid filter `{s}`: {e}"))?;
    Ok(s.to_owned())
}

impl Settings {
    /// Shards to run: `--threads`, else [`default_shards`] of the CPUs available to this
    /// process (`available_parallelism` honours the cgroup CPU quota and affinity on Linux).
    pub fn shard_count(&self) -> usize {
        self.threads.unwrap_or_else(|| default_shards(std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    /// Parses the command line. Kong 3.9's default query_cmd is `<bin> -dump` (one dash),
    /// which clap would read as `-d -u -m -p`, so the legacy spelling is rewritten first.
    /// Settings that are wrong together are refused here too, naming the flags.
    pub fn from_args() -> Settings {
        let settings =
            Settings::parse_from(std::env::args_os().map(|a| if a == "-dump" { "--dump".into() } else { a }));
        if let Err(e) = settings.check() {
            <Settings as clap::CommandFactory>::command().error(clap::error::ErrorKind::ArgumentConflict, e).exit();
        }
        settings
    }

    /// Cross-field checks (each flag alone is checked by its parser).
    pub fn check(&self) -> Result<(), String> {
        if self.buffer_budget_bytes < self.max_frame_bytes {
            return Err(format!(
                "--buffer-budget-bytes ({}) must be at least --max-frame-bytes ({}): a largest frame could never arrive",
                self.buffer_budget_bytes, self.max_frame_bytes
            ));
        }
        Ok(())
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
    fn a_log_filter_typo_is_refused_naming_the_flag() {
        let err = parse(&["--log", "debgu"]).unwrap_err();
        assert!(err.contains("--log") && err.contains("`debgu` does not name a level"), "{err}");
        assert!(parse(&["--log", "ghasi_plugin_server=verbose"]).is_err());
        assert!(parse(&["--log", "info,ghasi_plugin_server"]).is_err());
        for ok in ["info", "DEBUG", "warn,ghasi_plugin_server=debug", "ghasi_plugin_server::server=trace", "off"] {
            assert_eq!(parse(&["--log", ok]).unwrap().log, ok);
        }
    }

    #[test]
    fn warm_jwks_must_be_absolute_http_urls() {
        let err = parse(&["--warm-jwks", "not a url"]).unwrap_err();
        assert!(err.contains("--warm-jwks") && err.contains("not an absolute http(s) URL"), "{err}");
        assert!(parse(&["--warm-jwks", "ftp://a.example/jwks.json"]).is_err());
        assert!(parse(&["--warm-jwks", "/.well-known/jwks.json"]).is_err());
        let s = parse(&["--warm-jwks", "https://a.example/jwks.json,http://127.0.0.1:8081/jwks"]).unwrap();
        assert_eq!(s.warm_jwks, ["https://a.example/jwks.json", "http://127.0.0.1:8081/jwks"]);
    }

    #[test]
    fn metrics_listen_accepts_host_names_and_ip_addresses() {
        let s = parse(&["--metrics-listen", "localhost:9542"]).unwrap();
        let addr = s.metrics_listen.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 9542, "{addr}");
        assert_eq!(
            parse(&["--metrics-listen", "0.0.0.0:9542"]).unwrap().metrics_listen,
            Some("0.0.0.0:9542".parse().unwrap())
        );
        assert_eq!(parse(&["--metrics-listen", "[::1]:9"]).unwrap().metrics_listen, Some("[::1]:9".parse().unwrap()));
        for bad in ["localhost", "localhost:http", ":9542", "no-such-host.invalid:9542"] {
            let err = parse(&["--metrics-listen", bad]).unwrap_err();
            assert!(err.contains("--metrics-listen"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_buffer_budget_holds_at_least_one_largest_frame() {
        let ok = parse(&[]).unwrap();
        assert!(ok.check().is_ok());
        let s = parse(&["--max-frame-bytes", "1000", "--buffer-budget-bytes", "999"]).unwrap();
        let err = s.check().unwrap_err();
        assert!(err.contains("--buffer-budget-bytes") && err.contains("--max-frame-bytes"), "{err}");
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
