//! The cluster's NATS side: the command stream, the event stream and the
//! lease bucket, created by whichever node comes first (creating one with
//! the same configuration again is a no-op, so nodes starting together
//! agree), and waited for while a fresh NATS cluster elects its leaders.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, kv, stream};

use crate::events::{EVENTS_STREAM, EVENTS_SUBJECT};
use crate::log::COMMANDS_SUBJECT;

pub const COMMANDS_STREAM: &str = "EXHOST_COMMANDS";
pub const CLUSTER_BUCKET: &str = "EXHOST_CLUSTER";
/// How long a node waits for JetStream to answer at start-up.
const JETSTREAM_WAIT_MAX: Duration = Duration::from_secs(90);

/// How the streams are kept (both the same).
#[derive(Clone, Debug)]
pub struct Retention {
    /// Copies of every message (capped by the NATS cluster's size).
    pub replicas: usize,
    /// Messages older than this are dropped (`None`: kept).
    pub max_age: Option<Duration>,
    /// Beyond this many bytes the oldest messages are dropped (`None`: no cap).
    pub max_bytes: Option<u64>,
}

fn stream_config(name: &str, subject: &str, retention: &Retention) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        num_replicas: retention.replicas.max(1),
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: retention.max_age.unwrap_or(Duration::ZERO),
        max_bytes: retention.max_bytes.map_or(-1, |bytes| bytes.min(i64::MAX as u64) as i64),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The two streams and the bucket.
pub struct Streams {
    pub commands: stream::Stream,
    pub events: stream::Stream,
    pub kv: kv::Store,
}

/// Get or create the streams and the bucket, retrying while JetStream is not ready yet.
pub async fn ensure(js: &jetstream::Context, retention: &Retention) -> anyhow::Result<Streams> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match try_ensure(js, retention).await {
            Ok(streams) => return Ok(streams),
            Err(error) if started.elapsed() < JETSTREAM_WAIT_MAX => {
                if attempt % 10 == 1 {
                    tracing::info!(error = %format!("{error:#}"), waited_s = started.elapsed().as_secs(), "waiting for JetStream");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => {
                return Err(error.context(format!(
                    "JetStream did not answer within {} s (are the NATS servers running with -js, and clustered?)",
                    JETSTREAM_WAIT_MAX.as_secs()
                )));
            }
        }
    }
}

async fn try_ensure(js: &jetstream::Context, retention: &Retention) -> anyhow::Result<Streams> {
    let commands = js
        .get_or_create_stream(stream_config(COMMANDS_STREAM, COMMANDS_SUBJECT, retention))
        .await
        .context("the command stream")?;
    let events = js
        .get_or_create_stream(stream_config(EVENTS_STREAM, EVENTS_SUBJECT, retention))
        .await
        .context("the event stream")?;
    let kv = match js.get_key_value(CLUSTER_BUCKET).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: CLUSTER_BUCKET.into(),
                history: 1,
                num_replicas: retention.replicas.max(1),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("the cluster bucket")?,
    };
    Ok(Streams { commands, events, kv })
}
