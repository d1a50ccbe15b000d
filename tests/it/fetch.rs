//! Marathon's `fetch` end to end: the agent downloads an app's artifacts into the task's
//! sandbox before it starts (an archive unpacked, a file made executable, a cached one
//! reused once its server is gone), a container task finds them at `$MESOS_SANDBOX`, and a
//! download that fails or a host file outside the agent's `host_paths` fails the launch
//! with the reason.

use crate::common::{busybox_image, TestCluster};
use dcos_runtime::testimage::TestImageFormat;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn answer(status: &str, body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// An HTTP server of `files` on loopback, until the listener is dropped with the task.
pub(crate) async fn serve(
    files: Vec<(&'static str, Vec<u8>)>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = match files.iter().find(|(name, _)| *name == path) {
                Some((_, body)) => answer("200 OK", body),
                None => answer("404 Not Found", b"no such file"),
            };
            let _ = socket.write_all(&reply).await;
            let _ = socket.shutdown().await;
        }
    });
    (base, server)
}

/// A gzipped tar holding `site/index.txt`.
fn site_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let body = b"from the archive\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "site/index.txt", &body[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_fetched_into_the_sandbox_and_failures_say_why() {
    // The artifacts' server is on loopback: allowed here (refused by default, as the
    // fetcher's unit tests check).
    let cluster = TestCluster::start_with(|opts| opts.agent.policy.allow_local_fetch = true).await;
    let tool = b"#!/bin/sh\necho tool ran\n".to_vec();
    let (base, server) = serve(vec![("/site.tar.gz", site_archive()), ("/tool.sh", tool)]).await;
    let tool_uri = format!("{base}/tool.sh");
    cluster
        .deploy(json!({
            "id": "fetcher",
            "cmd": "cat site/index.txt; ./tool.sh; echo end; sleep 1000",
            "cpus": 0.1, "mem": 32,
            "fetch": [
                {"uri": format!("{base}/site.tar.gz")},
                {"uri": tool_uri, "executable": true, "cache": true}
            ]
        }))
        .await
        .expect("deploy");
    let output = cluster.output_of("/fetcher").await;
    assert!(output.contains("from the archive\ntool ran\n"), "{output}");

    cluster
        .deploy(json!({
            "id": "fetch-missing", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
            "fetch": [{"uri": format!("{base}/missing.tgz")}]
        }))
        .await
        .expect("deploy");
    let message = cluster.failure_of("/fetch-missing").await;
    assert!(
        message.contains(&format!("{base}/missing.tgz")) && message.contains("404"),
        "{message}"
    );
    cluster
        .deploy(json!({
            "id": "fetch-host", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
            "fetch": [{"uri": "file:///etc/shadow"}]
        }))
        .await
        .expect("deploy");
    let message = cluster.failure_of("/fetch-host").await;
    assert!(message.contains("host_paths"), "{message}");

    // The server is gone: the cached artifact still comes, into a container's sandbox.
    server.abort();
    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:fetch",
        TestImageFormat::DockerSave,
    );
    let url = format!("{}/images", cluster.handle().agent_url);
    let _: dcos_api::ImagesEnvelope = cluster.client.upload(&url, &tarball).await.unwrap();
    cluster
        .deploy(json!({
            "id": "fetch-cached",
            "cmd": "echo sandbox at $MESOS_SANDBOX; $MESOS_SANDBOX/tool.sh; echo end; sleep 1000",
            "cpus": 0.1, "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": "busybox:fetch"}},
            "fetch": [{"uri": tool_uri, "executable": true, "cache": true}]
        }))
        .await
        .expect("deploy");
    let output = cluster.output_of("/fetch-cached").await;
    assert!(
        output.contains("sandbox at /mnt/mesos/sandbox\ntool ran\n"),
        "{output}"
    );
    cluster.stop().await;
}
