//! A node with an empty data directory joining a cluster whose command
//! stream no longer starts at the first command (the stream's retention
//! dropped the oldest messages): it cannot rebuild from the stream, so it
//! fetches the active node's whole database (`GET /admin/v1/checkpoint`),
//! checks it against its manifest, puts it in place, and then follows the
//! stream from where the copy ends, as any restarted standby does.
//!
//! The copy carries the journal from command 1, so `exhost replay` and
//! `exhost verify` work on the new node's directory exactly as on the donor's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{kv, stream};
use exhost_node::checkpoint::{ArchiveStats, unpack_archive};
use exhost_node::watermark::sync_directory;

use crate::controller::LEASE_KEY;
use crate::lease::LeaseValue;

/// Where the fetched copy is unpacked before it is renamed into place.
const STAGING_DIR: &str = "db.fetching";
/// How long a node waits for an active node to fetch from.
const DONOR_WAIT_MAX: Duration = Duration::from_secs(300);
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// The longest one transfer may take (at 10 MB/s, 18 GB).
const TRANSFER_MAX: Duration = Duration::from_secs(1800);

/// Whether this node must start from a fetched checkpoint: its data directory
/// holds no database and the stream no longer holds command 1.
pub(crate) async fn needed(db_dir: &Path, commands: &stream::Stream) -> anyhow::Result<bool> {
    if db_dir.join("CURRENT").is_file() {
        return Ok(false);
    }
    let state = commands.get_info().await.context("reading the command stream's state")?.state;
    Ok(state.first_sequence > 1 || (state.messages == 0 && state.last_sequence > 0))
}

/// Fetch the active node's checkpoint into `data_dir`, waiting (and
/// retrying) until there is an active node that sends a whole one.
pub(crate) async fn from_active(kv: &kv::Store, data_dir: &Path, token: &str, node: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let holder = match kv.entry(LEASE_KEY).await {
            Ok(Some(entry)) => serde_json::from_slice::<LeaseValue>(&entry.value).ok(),
            _ => None,
        };
        let problem = match holder {
            Some(holder) if holder.node == node => {
                anyhow::bail!(
                    "the lease names this node ({node}) as active, but its data directory is empty: \
                     another data directory of {node} is in use, or this one was wiped while it was active"
                )
            }
            Some(holder) => {
                tracing::info!(from = %holder.node, at = %holder.http, "the command stream was trimmed: fetching a checkpoint");
                let (base, token, dir) = (format!("http://{}", holder.http), token.to_string(), data_dir.to_path_buf());
                match tokio::task::spawn_blocking(move || fetch(&base, &token, &dir)).await? {
                    Ok(stats) => {
                        tracing::info!(
                            from = %holder.node,
                            files = stats.files,
                            bytes = stats.bytes,
                            seconds = started.elapsed().as_secs_f64(),
                            "fetched a checkpoint"
                        );
                        return Ok(());
                    }
                    Err(error) => format!("{error:#}"),
                }
            }
            None => "no node is active".to_string(),
        };
        anyhow::ensure!(
            started.elapsed() < DONOR_WAIT_MAX,
            "the command stream was trimmed past its start, so this node needs a checkpoint of the active \
             node, and none came within {} s: {problem}",
            DONOR_WAIT_MAX.as_secs()
        );
        tracing::warn!(%problem, "no checkpoint yet; trying again");
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Fetch `base`'s checkpoint and make it `data_dir`'s database.
pub fn fetch(base: &str, token: &str, data_dir: &Path) -> anyhow::Result<ArchiveStats> {
    let staging = data_dir.join(STAGING_DIR);
    match std::fs::remove_dir_all(&staging) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", staging.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let unpacked = receive(base, token, &staging);
    let stats = match unpacked {
        Ok(stats) => stats,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    let db_dir = exhost_node::datadir::db_dir(data_dir);
    // Only an empty database directory (made by an earlier start) is replaced.
    match std::fs::remove_dir(&db_dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("{} is in the way of the fetched database", db_dir.display()));
        }
        _ => {}
    }
    std::fs::rename(&staging, &db_dir)
        .with_context(|| format!("moving the fetched database to {}", db_dir.display()))?;
    sync_directory(data_dir)?;
    Ok(stats)
}

fn receive(base: &str, token: &str, staging: &Path) -> anyhow::Result<ArchiveStats> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        // Making the checkpoint flushes the donor's memtables first.
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // A donor whose machine vanished mid-copy must not hold this node forever.
        .timeout_recv_body(Some(TRANSFER_MAX))
        .build()
        .into();
    let url = format!("{base}/admin/v1/checkpoint");
    let response = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .with_context(|| format!("asking {url}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.into_body().read_to_string().unwrap_or_default();
        anyhow::ensure!(
            status != 401,
            "{url} refused this node's operator token: every node of a cluster needs the same one (EXHOST_ADMIN_TOKEN)"
        );
        anyhow::bail!("{url} answered {status}: {body}");
    }
    let mut last_report = Instant::now();
    let started = Instant::now();
    let reader = response.into_body().into_reader();
    let stats = unpack_archive(reader, staging, |written| {
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let rate_mb_s = written as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!("fetching a checkpoint: {:.1} MB ({rate_mb_s:.1} MB/s)", written as f64 / 1e6);
        }
    })
    .with_context(|| format!("receiving the checkpoint from {url}"))?;
    Ok(stats)
}
