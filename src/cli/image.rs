//! `dcos-rs image`: import, pull, list, remove images on agents (their own API).

use super::{print_json, print_table, row};
use crate::cli::client::Client;
use anyhow::Context;
use clap::Subcommand;
use dcos_api::routes::{agent as agent_routes, cluster as cluster_routes};
use dcos_api::{ImagesEnvelope, NodesView};
use hyper::Method;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from a registry (HTTPS, OCI distribution API) into every agent.
    #[command(
        long_about = "Pull an image from a registry into every active agent.\n\n\
            Each agent downloads the image itself over HTTPS (OCI distribution API) and checks\n\
            every blob against its digest before importing it; a mismatch is refused and\n\
            nothing is kept. For a multi-platform image the agent takes the linux entry for\n\
            its own architecture.\n\n\
            References are read as docker reads them:\n  \
              busybox                              docker.io/library/busybox:latest\n  \
              registry.example.com:5000/team/app:v1\n  \
              quay.io/org/app@sha256:<digest>      pinned: the manifest must hash to it\n\n\
            Private registries: give --username and pipe the password or token in:\n  \
              echo \"$TOKEN\" | dcos-rs image pull --username ci --password-stdin registry.example.com/app:v1\n\n\
            Agents trust the system's CAs; start them with `dcos-rs up --registry-ca FILE`\n\
            for a registry with a private CA. Use the pulled image in an app as\n\
            container.docker.image with the same reference."
    )]
    Pull {
        /// Image reference, e.g. `busybox:1.36` or `registry.example.com/team/app:v1`.
        reference: String,
        /// User name for the registry (the password is read with --password-stdin).
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Read the password (or token) from standard input; needs --username.
        #[arg(long, requires = "username")]
        password_stdin: bool,
    },
    /// Import a `docker save` tarball or an OCI image layout tarball into every agent.
    Import { file: PathBuf },
    /// List images on the agents.
    List,
    /// Remove an image from every agent.
    Remove { reference: String },
}

async fn agent_urls(client: &Client) -> anyhow::Result<Vec<String>> {
    let nodes: NodesView = client.get(cluster_routes::NODES).await?;
    let urls: Vec<String> = nodes
        .agents
        .into_iter()
        .filter(|a| a.state == "active")
        .map(|a| a.url)
        .collect();
    anyhow::ensure!(!urls.is_empty(), "no active agent is registered");
    Ok(urls)
}

/// The password given on standard input: its first line, without the line break.
fn read_password_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "--password-stdin read an empty password"
    );
    Ok(password)
}

async fn pull(
    client: &Client,
    json: bool,
    reference: String,
    username: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let auth = match (username, password_stdin) {
        (Some(username), true) => Some(serde_json::json!({
            "username": username,
            "password": read_password_stdin()?,
        })),
        (Some(_), false) => anyhow::bail!(
            "--username needs --password-stdin: the password is read from standard input, never from the command line"
        ),
        (None, _) => None,
    };
    let mut request = serde_json::json!({ "reference": reference });
    if let Some(auth) = auth {
        request["auth"] = auth;
    }
    let body = serde_json::to_vec(&request)?;
    let mut all = Vec::new();
    for url in agent_urls(client).await? {
        if !json {
            eprintln!("pulling {reference} on agent {url}…");
        }
        let started = std::time::Instant::now();
        let pulled: ImagesEnvelope = client
            .send_json(
                Method::POST,
                &format!("{url}{}", agent_routes::IMAGES_PULL),
                &body,
            )
            .await?;
        if !json {
            for image in &pulled.images {
                println!(
                    "pulled {} ({}, {} layer(s), {} bytes) on {url} in {:.1} s",
                    image.reference,
                    image.digest,
                    image.layers,
                    image.size_bytes,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        all.extend(pulled.images);
    }
    if json {
        return print_json(&ImagesEnvelope { images: all });
    }
    Ok(())
}

pub(super) async fn image(
    client: &Client,
    json: bool,
    command: ImageCommand,
) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pull {
            reference,
            username,
            password_stdin,
        } => pull(client, json, reference, username, password_stdin).await,
        ImageCommand::Import { file } => {
            anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
            let mut all = Vec::new();
            for url in agent_urls(client).await? {
                if !json {
                    eprintln!("importing {} into agent {url}…", file.display());
                }
                let imported: ImagesEnvelope = client
                    .upload(&format!("{url}{}", agent_routes::IMAGES), &file)
                    .await?;
                all.extend(imported.images);
            }
            if json {
                return print_json(&ImagesEnvelope { images: all });
            }
            for image in &all {
                println!(
                    "imported {} ({}, {} layer(s), {} bytes)",
                    image.reference, image.digest, image.layers, image.size_bytes
                );
            }
            Ok(())
        }
        ImageCommand::List => {
            let mut rows = vec![row(&["AGENT", "REFERENCE", "DIGEST", "LAYERS", "SIZE"])];
            let mut all = Vec::new();
            for url in agent_urls(client).await? {
                let images: ImagesEnvelope = client
                    .get(&format!("{url}{}", agent_routes::IMAGES))
                    .await?;
                for i in &images.images {
                    rows.push(vec![
                        url.clone(),
                        i.reference.clone(),
                        i.digest.clone(),
                        i.layers.to_string(),
                        i.size_bytes.to_string(),
                    ]);
                }
                all.extend(images.images);
            }
            if json {
                return print_json(&ImagesEnvelope { images: all });
            }
            print_table(&rows);
            Ok(())
        }
        ImageCommand::Remove { reference } => {
            for url in agent_urls(client).await? {
                match client
                    .status_of(
                        Method::DELETE,
                        &format!("{url}{}", agent_routes::image(&reference)),
                    )
                    .await?
                {
                    s if s.is_success() => println!("removed {reference} from {url}"),
                    s if s.as_u16() == 404 => println!("{reference} is not on {url}"),
                    s => anyhow::bail!("removing {reference} from {url}: HTTP {s}"),
                }
            }
            Ok(())
        }
    }
}
