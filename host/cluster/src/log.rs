//! The command log of a cluster node: an append goes to the replicated
//! stream first (quorum, with expected-last-sequence fencing), then to the
//! node's own journal with fsync, and only then is it durable to the write
//! path. Both, because nats-server 2.9 acknowledges a publish before its
//! own fsync (docs/GUARANTEES.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use exhost_store::{CommandLog, Durability, Records, Store, StoreError};

use crate::shared::Shared;
use crate::wire;

/// The command stream's subject.
pub const COMMANDS_SUBJECT: &str = "exhost.commands";
/// A publish not acknowledged within this long is sent again (same message
/// id, so the stream keeps one copy), as long as the lease lasts.
const PUBLISH_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Why an append to the stream did not happen as asked.
#[derive(Debug)]
pub enum PublishFailure {
    /// Refused: another writer appended since (or this node holds no lease). Nothing written.
    Fenced(String),
    /// Not confirmed: the message may be in the stream.
    Unknown(String),
}

/// Publish `messages` one after another, each expecting the stream to end
/// where the previous one went. Returns the stream sequence of the last.
/// A message not acknowledged in time is sent again with the same id until
/// `until`; once one message is in, a later failure is `Unknown` for the whole.
pub async fn publish_chain(
    js: &jetstream::Context,
    mut last_stream_seq: u64,
    msg_id_prefix: &str,
    messages: Vec<(String, Vec<u8>)>,
    until: Instant,
) -> Result<u64, PublishFailure> {
    let mut any_in = false;
    for (suffix, payload) in messages {
        let payload = bytes::Bytes::from(payload);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{msg_id_prefix}:{suffix}").as_str());
        headers.insert("Nats-Expected-Last-Sequence", last_stream_seq.to_string().as_str());
        let started = Instant::now();
        let acked = loop {
            let attempt = async {
                let ack = js.publish_with_headers(COMMANDS_SUBJECT, headers.clone(), payload.clone()).await?;
                ack.await
            };
            let outcome = tokio::time::timeout(PUBLISH_ATTEMPT_TIMEOUT, attempt).await;
            match outcome {
                Ok(Ok(ack)) => break ack.sequence,
                Ok(Err(error)) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    let reason = format!("the command stream moved past seq {last_stream_seq}: another node writes it");
                    return Err(if any_in { PublishFailure::Unknown(reason) } else { PublishFailure::Fenced(reason) });
                }
                Ok(Err(error)) if Instant::now() < until => {
                    tracing::warn!(%error, "publishing to the command stream failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(error)) => return Err(PublishFailure::Unknown(error.to_string())),
                Err(_) if Instant::now() < until => {
                    tracing::warn!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "no ack from the command stream yet; sending again"
                    );
                }
                Err(_) => {
                    return Err(PublishFailure::Unknown(format!(
                        "no acknowledgement from the command stream within {} ms",
                        started.elapsed().as_millis()
                    )));
                }
            }
        };
        metrics::histogram!("exhost_cluster_publish_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("exhost_cluster_published_bytes_total").increment(payload.len() as u64);
        any_in = true;
        last_stream_seq = acked;
    }
    Ok(last_stream_seq)
}

/// [`CommandLog`] over the replicated stream and the local journal.
pub struct ReplicatedLog {
    local: Store,
    shared: Arc<Shared>,
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
}

impl ReplicatedLog {
    pub(crate) fn new(
        local: Store,
        shared: Arc<Shared>,
        js: jetstream::Context,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ReplicatedLog { local, shared, js, runtime }
    }
}

impl CommandLog for ReplicatedLog {
    fn append(&self, records: &[(u64, &[u8])], durability: Durability) -> Result<(), StoreError> {
        let Some(&(first_seq, _)) = records.first() else { return Ok(()) };
        let last_seq = first_seq + records.len() as u64 - 1;
        // Called on the sequencer thread, never inside the runtime.
        let mut writer = self.shared.writer.blocking_lock();
        let Some(lease) = writer.lease.clone().filter(|lease| Instant::now() < lease.holds_until) else {
            return Err(StoreError::NotWriter(self.shared.not_writer_reason()));
        };
        if first_seq != writer.next_seq {
            // The sequencer and the stream disagree on where the log ends: refuse, and resync.
            writer.lease = None;
            self.shared.stepped_down.notify_one();
            return Err(StoreError::NotWriter(format!(
                "the stream's next command is {} but this batch starts at {first_seq}",
                writer.next_seq
            )));
        }
        let messages =
            wire::encode_batches(records).into_iter().map(|(first, _, payload)| (first.to_string(), payload)).collect();
        let prefix = format!("{}:{}", self.shared.node, lease.term);
        let published = self.runtime.block_on(publish_chain(
            &self.js,
            writer.last_stream_seq,
            &prefix,
            messages,
            lease.holds_until,
        ));
        match published {
            Ok(last_stream_seq) => {
                writer.last_stream_seq = last_stream_seq;
                writer.next_seq = last_seq + 1;
                self.shared.saw_log_seq(last_seq);
            }
            Err(failure) => {
                writer.lease = None;
                self.shared.stepped_down.notify_one();
                return Err(match failure {
                    PublishFailure::Fenced(reason) => StoreError::NotWriter(reason),
                    PublishFailure::Unknown(reason) => StoreError::Unconfirmed(reason),
                });
            }
        }
        drop(writer);
        // In the quorum's memory; now on this node's disk too, before anyone hears of it.
        self.local.append(records, durability)
    }

    fn read_from(&self, from_seq: u64) -> Records<'_> {
        self.local.read_from(from_seq)
    }

    fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        self.local.last_seq()
    }
}
