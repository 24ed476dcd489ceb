//! Logging through `tracing-subscriber`: the level filter from `RUST_LOG`, the format from
//! `log.format`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset: our info lines; sqlx only when something is wrong.
const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Installs the global subscriber. Calling it twice keeps the first one.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
