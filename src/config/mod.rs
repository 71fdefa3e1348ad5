//! Configuration: command line, environment, TOML file, defaults.

mod settings;

pub use settings::{Limits, LogFormat, Settings, StoreSettings};
