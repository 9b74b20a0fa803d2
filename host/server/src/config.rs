//! Host configuration: defaults that are safe, a TOML file that can change
//! them (`--config`), and command-line flags that override both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Everything `exhost serve` can be told.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP and WebSocket server listens.
    pub listen: SocketAddr,
    /// Where the database, the operator token and logs live.
    pub data_dir: PathBuf,
    /// Take a snapshot after this many commands since the last one (0: never by count).
    pub snapshot_every_commands: u64,
    /// `true` (the default) fsyncs every journal batch before anything is acknowledged.
    /// `false` is for benchmarks only: an acknowledged command can be lost in a crash.
    pub journal_sync: bool,
    /// The most commands one journal write (group commit) carries.
    pub journal_batch_commands_max: usize,
    /// The most commands waiting for the sequencer; beyond it clients get `rate_limited`.
    pub submit_queue_max: usize,
    /// Request bodies above this many bytes are refused with `payload_too_large`.
    pub body_bytes_max: usize,
    /// Module uploads above this many bytes are refused.
    pub module_bytes_max: usize,
    /// Accepted clock skew of signed requests, in milliseconds.
    pub signature_window_ms: u64,
    /// The key that seals API secrets at rest (default `<data_dir>/secrets.key`,
    /// created on first start). Keep it apart from the database's backups.
    pub secrets_key_file: Option<PathBuf>,
    /// Requests one API key may make per second, sustained; beyond it,
    /// `429 rate_limited` (other keys are still served).
    pub rate_limit_per_second: u32,
    /// Requests one API key may make at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// What a command that made a module fault costs its key, in requests:
    /// a fault costs the engine a rollback, so a key sending faulting
    /// commands is slowed down far sooner than one sending good ones.
    pub fault_cost_requests: u32,
    /// A connection that has not sent a request's headers within this long is closed.
    pub header_read_timeout_ms: u64,
    /// A request whose body has not arrived within this long is refused.
    pub body_read_timeout_ms: u64,
    /// Connections served at once; more wait to be accepted.
    pub connections_max: usize,
    /// Point-in-time rebuilds (`at_seq` books, `source=replay` accounts) run at once.
    pub point_in_time_concurrent_max: usize,
    /// The most journal commands one point-in-time rebuild may replay past its snapshot.
    pub point_in_time_replay_commands_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./exhost-data"),
            snapshot_every_commands: 100_000,
            journal_sync: true,
            journal_batch_commands_max: 4_096,
            submit_queue_max: 65_536,
            body_bytes_max: 64 * 1024,
            module_bytes_max: 16 * 1024 * 1024,
            signature_window_ms: 5_000,
            secrets_key_file: None,
            rate_limit_per_second: 500,
            rate_limit_burst: 1_000,
            fault_cost_requests: 100,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            connections_max: 10_000,
            point_in_time_concurrent_max: 2,
            point_in_time_replay_commands_max: 1_000_000,
        }
    }
}

impl Config {
    /// The defaults, changed by a TOML file if one is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// This configuration as a TOML file would give it (`exhost config`);
    /// an error only for a path that is not UTF-8, which TOML cannot hold.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("the configuration cannot be written as TOML (is a path not UTF-8?)")
    }

    pub fn db_dir(&self) -> PathBuf {
        exhost_node::datadir::db_dir(&self.data_dir)
    }

    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file.clone().unwrap_or_else(|| self.data_dir.join("secrets.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_refused() {
        let config: Config = toml::from_str("listen = \"127.0.0.1:9000\"\nsnapshot_every_commands = 5").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.snapshot_every_commands, 5);
        assert!(config.journal_sync);
        assert!(toml::from_str::<Config>("snapshot_every = 5").is_err());
    }

    #[test]
    fn the_example_file_names_every_key_with_its_default() {
        let text = include_str!("../../../examples/exhost.toml");
        let file: toml::Value = toml::from_str(text).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(file, defaults, "examples/exhost.toml must set every key to its default");
        // The one key whose default is "unset" is there, commented out.
        assert!(text.contains("\n# secrets_key_file = "));
        // What `exhost config` prints reads back as the same configuration.
        let mut changed = Config { snapshot_every_commands: 7, ..Config::default() };
        changed.secrets_key_file = Some(PathBuf::from("/keys/k"));
        let again: Config = toml::from_str(&changed.to_toml().unwrap()).unwrap();
        assert_eq!(toml::Value::try_from(again).unwrap(), toml::Value::try_from(changed).unwrap());
    }
}
