//! The fencing the cluster's safety rests on, against a real nats-server
//! (Debian's 2.9.10 in CI): an append that names a stale stream end is
//! refused and writes nothing; the same append sent again under its message
//! id is kept once; a writer that knows the stream's end appends.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use exhost_cluster::log::{COMMANDS_SUBJECT, PublishFailure, publish_chain};

struct Server(Child, std::path::PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn nats_server() -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("exhost-fencing-{}-{port}", std::process::id()));
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed (bash .ci/setup)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child, dir), port)
}

#[tokio::test(flavor = "current_thread")]
async fn a_stale_writer_is_refused_and_a_resent_append_is_kept_once() {
    let (_server, port) = nats_server();
    let js = jetstream::new(async_nats::connect(format!("nats://127.0.0.1:{port}")).await.unwrap());
    let commands = js
        .create_stream(stream::Config {
            name: "EXHOST_COMMANDS".into(),
            subjects: vec![COMMANDS_SUBJECT.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let one = |tag: &str| vec![(tag.to_string(), tag.as_bytes().to_vec())];

    // Writer A appends at the start; B, who knows the end, appends after it.
    assert_eq!(publish_chain(&js, 0, "a:1", one("first"), until).await.unwrap(), 1);
    assert_eq!(publish_chain(&js, 1, "b:2", one("term"), until).await.unwrap(), 2);
    // A still thinks the stream ends at 1: refused, and nothing is written.
    let stale = publish_chain(&js, 1, "a:1", one("second"), until).await;
    assert!(matches!(stale, Err(PublishFailure::Fenced(_))), "{stale:?}");
    assert_eq!(commands.get_info().await.unwrap().state.messages, 2);
    // Sent again under the same id (its ack was lost, say): kept once, at its first place.
    assert_eq!(publish_chain(&js, 1, "b:2", one("term"), until).await.unwrap(), 2);
    assert_eq!(commands.get_info().await.unwrap().state.messages, 2);
    // A chain appends its messages one after another, each after the last.
    let chain = vec![("x".to_string(), b"x".to_vec()), ("y".to_string(), b"y".to_vec())];
    assert_eq!(publish_chain(&js, 2, "b:2", chain, until).await.unwrap(), 4);
}
