//! Arguments shared by the offline subcommands: where the data is.

use std::path::PathBuf;

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
