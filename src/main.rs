//! CLI entry: `--dump` for Kong's query_cmd, otherwise serve the socket.

use std::process::ExitCode;

use ghasi_plugin_server::config::{LogFormat, Settings};

fn main() -> ExitCode {
    let settings = Settings::from_args();
    if settings.dump {
        // stdout carries only the JSON: Kong decodes all of it (kong-protocol.md §8.1).
        return match ghasi_plugin_server::dump(settings.plugin.as_deref()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ghasi-plugin-server: {e}");
                ExitCode::from(64)
            }
        };
    }
    init_logging(&settings);
    // This thread's runtime accepts connections and runs the background work (signals, the
    // event reaper, the metrics listener, JWKS warm-up); Kong's connections are served by the
    // single-threaded shards `server::serve` starts (`--threads`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghasi-plugin-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ghasi_plugin_server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (Kong merges it into its error log at INFO); stdout is for `--dump`.
fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(false).init(),
    }
}
