//! CLI entry: `--dump` for Kong's query_cmd, otherwise serve the socket.

// No unsafe code in the product: everything it needs from the OS comes through std,
// tokio or /proc text.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use ghasi_plugin_server::config::{LogFormat, Settings};
use ghasi_plugin_server::log_file::LogFile;

fn main() -> ExitCode {
    let settings = Settings::from_args();
    if settings.dump {
        // stdout carries only the JSON: Kong decodes all of it
        // (docs/protocol.md#plugin-discovery-the-dump).
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
    if !settings.probe.is_empty() {
        return match ghasi_plugin_server::probe::check_all(&settings.probe) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failures) => {
                for f in failures {
                    eprintln!("ghasi-plugin-server --probe: {f}");
                }
                ExitCode::FAILURE
            }
        };
    }
    let log_file = match init_logging(&settings) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ghasi-plugin-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    // This thread's runtime accepts connections and runs the background work (signals, the
    // event reaper, the metrics listener, JWKS warm-up, the revocation subscriber); Kong's
    // connections are served by the single-threaded shards `server::serve` starts (`--threads`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ghasi-plugin-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = log_file {
        let _in_runtime = runtime.enter();
        match file.reopen_on_sighup() {
            Ok(task) => drop(runtime.spawn(task)),
            Err(e) => {
                eprintln!("ghasi-plugin-server: --log-file: cannot install the SIGHUP handler: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match runtime.block_on(ghasi_plugin_server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (Kong merges it into its error log at INFO); stdout is for `--dump`.
/// With `--log-file` every line also goes to that file (returned for the SIGHUP reopen).
fn init_logging(settings: &Settings) -> Result<Option<LogFile>, ghasi_plugin_server::log_file::OpenError> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = settings.log_file.as_deref().map(LogFile::open).transpose()?;
    let writer = match &file {
        Some(f) => BoxMakeWriter::new(std::io::stderr.and(f.clone())),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(false).init(),
    }
    Ok(file)
}
