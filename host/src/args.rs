//! Arguments shared by the subcommands: where the data is, where the host is.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use exhost_server::Config;

#[derive(Args, Clone)]
pub struct DataArgs {
    /// The data directory.
    #[arg(long, env = "EXHOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl DataArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// A running host and its operator token.
#[derive(Args, Clone)]
pub struct HostArgs {
    /// The running host.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EXHOST_URL")]
    pub url: String,
    /// The operator token (default: EXHOST_ADMIN_TOKEN, then ./exhost-data/admin.token).
    #[arg(long)]
    pub token: Option<String>,
}

impl HostArgs {
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Ok(token) = std::env::var("EXHOST_ADMIN_TOKEN") {
            return Ok(token);
        }
        let path = Config::default().token_path();
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("no --token, no EXHOST_ADMIN_TOKEN, and no {}", path.display()))
    }
}
