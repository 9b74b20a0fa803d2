//! Downstream: every event, once, in order, on the JetStream stream
//! `EXHOST_EVENTS` (subject `exhost.events`, message id `SEQ:IDX`), published
//! by the active node from its own stored events.
//!
//! Exactly once without coordination: the events are a pure function of the
//! log, so the stream's n-th message is the n-th event whichever node sends
//! it. Each publish expects the stream to hold exactly the events before it
//! (`Nats-Expected-Last-Sequence`), and carries the event's id for the
//! stream's duplicate window; a new active node resumes after the last
//! message the stream holds. So a deposed publisher still running cannot
//! put an event twice, or out of place, and pipelining is safe.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use exhost_engine::Event;
use exhost_node::Node;
use exhost_node::readmodel::events_from;
use exhost_server::views::event_json;
use exhost_store::Store;

pub const EVENTS_STREAM: &str = "EXHOST_EVENTS";
pub const EVENTS_SUBJECT: &str = "exhost.events";
/// Publishes awaiting their acknowledgement at once.
const IN_FLIGHT_MAX: usize = 512;
const PAGE_EVENTS: usize = 2_048;

/// The event publisher of the active node: started on taking over, stopped on stepping down.
pub(crate) struct EventPublisher {
    js: jetstream::Context,
    stream: stream::Stream,
    store: Store,
    running: Option<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl EventPublisher {
    pub(crate) fn new(js: jetstream::Context, stream: stream::Stream, store: Store) -> EventPublisher {
        EventPublisher { js, stream, store, running: None }
    }

    pub(crate) fn start(&mut self, node: Arc<Node>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = Publisher { js: self.js.clone(), stream: self.stream.clone(), store: self.store.clone(), node };
        self.running = Some((stop, tokio::spawn(task.run(stopped))));
    }

    pub(crate) async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// The event after `(seq, idx)` is the next to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    seq: u64,
    idx: u32,
}

struct Publisher {
    js: jetstream::Context,
    stream: stream::Stream,
    store: Store,
    node: Arc<Node>,
}

/// Parse a message id `SEQ:IDX`.
pub fn parse_event_id(id: &str) -> Option<(u64, u32)> {
    let (seq, idx) = id.split_once(':')?;
    Some((seq.parse().ok()?, idx.parse().ok()?))
}

impl Publisher {
    async fn run(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut live = self.node.live.subscribe();
        'resync: loop {
            if *stopped.borrow() {
                return;
            }
            let (mut stream_last, mut after) = match self.resume().await {
                Ok(resumed) => resumed,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "reading where the event stream ends failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                if *stopped.borrow() {
                    return;
                }
                let from_seq = after.map_or(1, |cursor| cursor.seq);
                let store = self.store.clone();
                let page = tokio::task::spawn_blocking(move || events_from(&store, from_seq, PAGE_EVENTS)).await;
                let events: Vec<Event> = match page {
                    Ok(Ok((events, _))) => events
                        .into_iter()
                        .filter(|event| after.is_none_or(|cursor| Cursor { seq: event.seq, idx: event.idx } > cursor))
                        .collect(),
                    other => {
                        tracing::warn!(?other, "reading stored events failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if events.is_empty() {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = live.recv() => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    continue;
                }
                match self.publish(&events, stream_last).await {
                    Ok(()) => {
                        stream_last += events.len() as u64;
                        after = events.last().map(|event| Cursor { seq: event.seq, idx: event.idx });
                        metrics::counter!("exhost_cluster_events_published_total").increment(events.len() as u64);
                    }
                    Err(error) => {
                        tracing::info!(%error, "the event stream moved on; resuming after its last message");
                        continue 'resync;
                    }
                }
            }
        }
    }

    /// The stream's last sequence and the last event it holds.
    async fn resume(&self) -> anyhow::Result<(u64, Option<Cursor>)> {
        let last = self.stream.get_info().await?.state.last_sequence;
        if last == 0 {
            return Ok((0, None));
        }
        let message = self.stream.get_raw_message(last).await?;
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|value| value.as_str().to_string())
            .unwrap_or_default();
        let (seq, idx) =
            parse_event_id(&id).ok_or_else(|| anyhow::anyhow!("the event stream's last message has id {id:?}"))?;
        Ok((last, Some(Cursor { seq, idx })))
    }

    /// Send `events` as the stream's messages `stream_last + 1 ..`, pipelined.
    async fn publish(&self, events: &[Event], stream_last: u64) -> anyhow::Result<()> {
        let bodies: Vec<Vec<u8>> = {
            let directory = self.node.directory.read().unwrap_or_else(|p| p.into_inner());
            events.iter().map(|event| event_json(event, &directory).to_string().into_bytes()).collect()
        };
        let mut in_flight = VecDeque::new();
        for (i, (event, body)) in events.iter().zip(bodies).enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}:{}", event.seq, event.idx).as_str());
            headers.insert("Nats-Expected-Last-Sequence", (stream_last + i as u64).to_string().as_str());
            in_flight.push_back(self.js.publish_with_headers(EVENTS_SUBJECT, headers, body.into()).await?);
            if in_flight.len() >= IN_FLIGHT_MAX
                && let Some(ack) = in_flight.pop_front()
            {
                ack.await?;
            }
        }
        for ack in in_flight {
            ack.await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_parse_as_seq_and_index() {
        assert_eq!(super::parse_event_id("42:3"), Some((42, 3)));
        assert_eq!(super::parse_event_id("42"), None);
        assert_eq!(super::parse_event_id("x:1"), None);
    }
}
