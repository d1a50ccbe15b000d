//! Fetching a task's artifacts (Marathon's `fetch`, Mesos's fetcher) before it starts: each
//! URI is downloaded (`http://`, `https://`) or copied (`file://`, only from under the
//! agent's `host_paths`, as a host volume) into the task's working directory, unpacked when
//! asked (`.tar`, `.tar.gz`, `.tgz`, `.gz`), made executable when asked (files 0644 or
//! 0755, directories 0755), then handed to the task's user. Downloads marked `cache` are
//! kept in the agent's artifact cache (`<work_dir>/fetch-cache`, one file per sha256 of the
//! URI, written whole or not at all) and copied from there the next time; `file://`
//! artifacts are local already and never cached.
//!
//! Who writes: the agent, as root, into a working directory that is root's own (0700) for
//! the whole fetch, so no other user can reach into it and swap what is written for a link;
//! only at the end is everything in it given to the task's user (`hand_over`: lchown,
//! entries before their directories, the directory last). Who reads: a `file://` artifact is
//! opened with the task's own credentials (`open_as`, on a thread of its own), so a task
//! gets no host file its user could not read; without a task user it is refused.
//!
//! Bounded: redirects (`FETCH_REDIRECTS_MAX`, never from https to http), the connect, answer
//! and idle timeouts of the HTTP layer shared with registry pulls (`registry.rs`), a whole
//! download (`FETCH_DOWNLOAD_TIMEOUT_MS`), an artifact (`FETCH_MAX_BYTES`), what an archive
//! unpacks to (`FETCH_EXTRACT_MAX_BYTES`, `FETCH_EXTRACT_ENTRIES_MAX`), all of one task's
//! artifacts together, downloaded and unpacked (`ByteBudget`: its `disk`, at most
//! `FETCH_TASK_MAX_BYTES`), the cache (`FETCH_CACHE_MAX_BYTES`, `FETCH_CACHE_ENTRIES_MAX`,
//! least recently used out first). How many tasks fetch at once is the agent's
//! (`launch.rs`).
//!
//! An archive writes only inside the directory: absolute names and `..` are refused, nothing
//! is written through a symbolic link, links must point inside (checked on their text: the
//! fetcher never follows them), devices and fifos are refused, and no entry keeps its owner
//! or a setuid bit.
//!
//! Deliberately absent: `.zip`, `.tbz2`, `.txz` (and `.tar.bz2`, `.tar.xz`) unpacking (such
//! an artifact is kept as a file, as one of an unknown kind is), revalidating a cached
//! artifact (a changed one needs a new URI, or `cache` off), resumed downloads, credentials,
//! trust beyond the system's CAs.

use super::policy::TaskPolicy;
use super::registry::{self, DownloadClient, TransferError};
use dcos_core::TaskFetch;
use dcos_runtime::image::Digest;
use flate2::read::MultiGzDecoder;
use hyper::StatusCode;
use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{BufReader, BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The artifact cache, under the agent's work dir.
pub(super) const FETCH_CACHE_DIR: &str = "fetch-cache";
/// Largest artifact downloaded or copied (as large as a pulled image may be).
pub const FETCH_MAX_BYTES: u64 = 8 << 30;
/// Longest download of one artifact, redirects included: a slow but never silent server
/// ends here (a silent one at the HTTP layer's idle timeout).
pub const FETCH_DOWNLOAD_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Most redirects followed for one artifact.
pub const FETCH_REDIRECTS_MAX: usize = 5;
/// Most bytes one archive unpacks to (as an image layer may).
pub const FETCH_EXTRACT_MAX_BYTES: u64 = 16 << 30;
/// Most bytes all of one task's artifacts take together, downloaded and unpacked (a task
/// with a `disk` gets at most that): one launch cannot fill the agent's disk.
pub const FETCH_TASK_MAX_BYTES: u64 = 16 << 30;
/// Most entries of one archive.
pub const FETCH_EXTRACT_ENTRIES_MAX: u64 = 1_000_000;
/// Most bytes the artifact cache keeps (Mesos's default `--fetcher_cache_size`).
pub const FETCH_CACHE_MAX_BYTES: u64 = 2 << 30;
/// Most artifacts the cache keeps.
pub const FETCH_CACHE_ENTRIES_MAX: usize = 4096;
/// Buffer between the network (or an archive) and a file.
const FETCH_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Longest file name an artifact may get (the kernel's NAME_MAX).
const FILE_NAME_MAX_BYTES: usize = 255;
/// Longest path of an archive entry.
const ENTRY_PATH_MAX_BYTES: usize = 4096;
/// Modes of what is fetched: the task reads everything and runs what is executable.
const FILE_MODE: u32 = 0o644;
const EXECUTABLE_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;
/// How an unfinished download into the cache ends its name.
const PART_SUFFIX: &str = ".part";

/// Why an artifact did not make it into the sandbox; the launch fails with it
/// (`fetching https://...: 404 Not Found`).
#[derive(Debug, thiserror::Error)]
#[error("fetching {uri}: {failure}")]
pub(super) struct FetchError {
    pub uri: String,
    pub failure: FetchFailure,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FetchFailure {
    /// Refused before or instead of a download: the URI, its name, the agent's policy, an
    /// archive format, a redirect.
    #[error("{0}")]
    Refused(String),
    /// The server's answer: `404 Not Found` (`... from <url>` after a redirect).
    #[error("{0}")]
    Status(String),
    /// No answer: unreachable, TLS refused, timed out.
    #[error("{0}")]
    Transfer(String),
    #[error("{what} is larger than {limit_bytes} bytes")]
    TooLarge {
        what: &'static str,
        limit_bytes: u64,
    },
    /// Past the task's budget for all its artifacts together (`ByteBudget`).
    #[error("the task's artifacts exceed {0}")]
    OverBudget(String),
    #[error("not downloaded within {0} ms")]
    TimedOut(u64),
    #[error("unpacking: {0}")]
    Archive(String),
    /// The task was killed meanwhile: nothing more is fetched.
    #[error("stopped: the task was killed")]
    Cancelled,
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
}

impl From<TransferError> for FetchFailure {
    fn from(error: TransferError) -> FetchFailure {
        FetchFailure::Transfer(error.to_string())
    }
}

/// What one task's fetch did.
#[derive(Debug, Default)]
pub(super) struct FetchReport {
    pub artifacts: usize,
    /// Downloaded, copied or taken from the cache (before unpacking).
    pub bytes: u64,
    /// Artifacts taken from the cache.
    pub from_cache: usize,
    pub elapsed_ms: u64,
}

/// What all of one task's artifacts may take together, downloaded and unpacked: its `disk`
/// when the app asks for one, and never more than `FETCH_TASK_MAX_BYTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ByteBudget {
    limit_bytes: u64,
    /// The task's `disk` when that is the limit (named in the refusal).
    disk_mib: Option<u64>,
}

impl ByteBudget {
    /// The budget of a task asking for `disk_mib` (0: no `disk`, Marathon's default).
    pub(super) fn for_task(disk_mib: u64) -> ByteBudget {
        let disk_bytes = disk_mib.saturating_mul(1 << 20);
        match disk_mib > 0 && disk_bytes < FETCH_TASK_MAX_BYTES {
            true => ByteBudget {
                limit_bytes: disk_bytes,
                disk_mib: Some(disk_mib),
            },
            false => ByteBudget {
                limit_bytes: FETCH_TASK_MAX_BYTES,
                disk_mib: None,
            },
        }
    }

    fn exceeded(&self) -> FetchFailure {
        FetchFailure::OverBudget(match self.disk_mib {
            Some(disk_mib) => format!("its disk of {disk_mib} MiB"),
            None => format!(
                "{} MiB, the most one task's artifacts may take",
                FETCH_TASK_MAX_BYTES >> 20
            ),
        })
    }
}

/// How many bytes one step (a download, a copy, an unpacked file) may still write, and what
/// it is over when more comes: its own limit or the task's budget, whichever is less.
#[derive(Debug, Clone, Copy)]
struct Cap {
    bytes: u64,
    over: Over,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    /// The step's own limit: `what` is larger than `limit_bytes`.
    Own {
        what: &'static str,
        limit_bytes: u64,
    },
    Budget(ByteBudget),
}

impl Cap {
    /// A step of `what`, with `own_left_bytes` of its own `own_limit_bytes` left, in a task
    /// that used `used_bytes` of its `budget` already.
    fn new(
        what: &'static str,
        own_limit_bytes: u64,
        own_left_bytes: u64,
        budget: ByteBudget,
        used_bytes: u64,
    ) -> Cap {
        let budget_left_bytes = budget.limit_bytes.saturating_sub(used_bytes);
        match budget_left_bytes < own_left_bytes {
            true => Cap {
                bytes: budget_left_bytes,
                over: Over::Budget(budget),
            },
            false => Cap {
                bytes: own_left_bytes,
                over: Over::Own {
                    what,
                    limit_bytes: own_limit_bytes,
                },
            },
        }
    }

    /// The artifact limit for one download or copy.
    fn artifact(budget: ByteBudget, used_bytes: u64) -> Cap {
        Cap::new(
            "the artifact",
            FETCH_MAX_BYTES,
            FETCH_MAX_BYTES,
            budget,
            used_bytes,
        )
    }

    fn exceeded(&self) -> FetchFailure {
        match self.over {
            Over::Own { what, limit_bytes } => FetchFailure::TooLarge { what, limit_bytes },
            Over::Budget(budget) => budget.exceeded(),
        }
    }
}

/// Fetches `items` in order into `dest`, then gives `dest` and all in it to `owner` (host
/// uid and gid; `None` leaves them the agent's). `dest` is the task's working directory,
/// made already and root's own (0700): nothing but this fetch writes in it until the hand
/// over. `file://` artifacts are opened with `owner`'s credentials (refused without one);
/// all artifacts together stay within `budget`. Stops at the first failure, and when
/// `cancel` fires (the task was killed); what it left in `dest` is then the caller's to
/// remove with the sandbox. Never leaves a partial file in `cache_dir`.
pub(super) async fn fetch_all(
    items: &[TaskFetch],
    dest: &Path,
    cache_dir: &Path,
    policy: &TaskPolicy,
    owner: Option<(u32, u32)>,
    budget: ByteBudget,
    cancel: &CancellationToken,
) -> Result<FetchReport, FetchError> {
    let started = Instant::now();
    let mut fetcher = Fetcher {
        dest,
        cache_dir,
        policy,
        owner,
        cancel,
        client: None,
        budget,
        used_bytes: 0,
    };
    let mut report = FetchReport::default();
    for (index, item) in items.iter().enumerate() {
        let fetched = fetcher
            .fetch(index, item)
            .await
            .map_err(|failure| FetchError {
                uri: item.uri.clone(),
                failure,
            })?;
        report.artifacts += 1;
        report.bytes += fetched.bytes;
        report.from_cache += usize::from(fetched.from_cache);
    }
    if let Some((uid, gid)) = owner {
        let dest = dest.to_path_buf();
        let shown = dest.display().to_string();
        blocking(move || hand_over(&dest, uid, gid))
            .await
            .map_err(|failure| FetchError {
                uri: format!("into {shown}"),
                failure,
            })?;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// One task's fetch: where its artifacts go and for whom.
struct Fetcher<'a> {
    dest: &'a Path,
    cache_dir: &'a Path,
    policy: &'a TaskPolicy,
    /// The task's host uid and gid: what `file://` artifacts are opened as.
    owner: Option<(u32, u32)>,
    cancel: &'a CancellationToken,
    /// Made for the first http(s) artifact (it reads the system's CAs), then reused.
    client: Option<DownloadClient>,
    budget: ByteBudget,
    /// Bytes of `budget` taken so far: artifacts as fetched, and what they unpacked to.
    used_bytes: u64,
}

/// One artifact in the sandbox.
struct Fetched {
    bytes: u64,
    from_cache: bool,
}

impl Fetcher<'_> {
    async fn fetch(&mut self, index: usize, item: &TaskFetch) -> Result<Fetched, FetchFailure> {
        if self.cancel.is_cancelled() {
            return Err(FetchFailure::Cancelled);
        }
        let name =
            output_name(&item.uri, item.output_file.as_deref()).map_err(FetchFailure::Refused)?;
        // As in Mesos, an executable artifact is kept as it is, never unpacked.
        let kind = match item.extract && !item.executable {
            true => archive_kind(&name),
            false => ArchiveKind::Plain,
        };
        // Checked before anything is downloaded.
        let kind = match kind {
            // `extract` is Marathon's default: an app fetching a `.zip` must still run.
            ArchiveKind::Unsupported(extension) => {
                tracing::info!(
                    uri = %item.uri,
                    "{name}: {extension} archives are not unpacked here (only .tar, .tar.gz, .tgz and .gz): kept as a file"
                );
                ArchiveKind::Plain
            }
            ArchiveKind::Gz => {
                gunzipped_name(&name).map_err(FetchFailure::Refused)?;
                kind
            }
            ArchiveKind::Plain | ArchiveKind::Tar | ArchiveKind::TarGz => kind,
        };
        // Written beside its name, then renamed: the name holds a whole artifact or nothing.
        let temp = self.dest.join(format!(".{name}.fetching"));
        let cap = Cap::artifact(self.budget, self.used_bytes);
        let fetched = match source_of(&item.uri).map_err(FetchFailure::Refused)? {
            Source::File(path) => {
                let (policy, field, path, owner) = (
                    self.policy.clone(),
                    format!("fetch[{index}].uri"),
                    path.to_string(),
                    self.owner,
                );
                let temp = temp.clone();
                let bytes = blocking(move || {
                    let host_path = policy
                        .host_path(&field, &path)
                        .map_err(FetchFailure::Refused)?;
                    // Never opened as root: that would hand the task files its user cannot
                    // read (another task's secrets under `host_paths`).
                    let Some((uid, gid)) = owner else {
                        return Err(FetchFailure::Refused(format!(
                            "{field} {path}: a file:// artifact is opened as the task's user, and this agent's runtime gives the task none"
                        )));
                    };
                    let source = open_as(&host_path, uid, gid)?;
                    copy_host_file(source, &temp, cap)
                })
                .await?;
                Fetched {
                    bytes,
                    from_cache: false,
                }
            }
            Source::Http if item.cache => self.through_cache(&item.uri, &temp, cap).await?,
            Source::Http => Fetched {
                bytes: self.download_to(&item.uri, &temp, cap).await?,
                from_cache: false,
            },
        };
        self.used_bytes += fetched.bytes;
        let (dest, budget, used_bytes) = (self.dest.to_path_buf(), self.budget, self.used_bytes);
        let mode = match item.executable {
            true => EXECUTABLE_MODE,
            false => FILE_MODE,
        };
        let unpacked_bytes = blocking(move || {
            install(&temp, &dest.join(&name), mode)?;
            unpack(kind, &name, &dest, budget, used_bytes)
        })
        .await?;
        self.used_bytes += unpacked_bytes;
        Ok(fetched)
    }

    /// The artifact from the cache, or downloaded into it first (a miss), within `cap`.
    async fn through_cache(
        &mut self,
        uri: &str,
        temp: &Path,
        cap: Cap,
    ) -> Result<Fetched, FetchFailure> {
        let key = cache_key(uri);
        let entry = self.cache_dir.join(&key);
        let hit = {
            let (entry, temp) = (entry.clone(), temp.to_path_buf());
            blocking(move || copy_from_cache(&entry, &temp, cap)).await?
        };
        if let Some(bytes) = hit {
            return Ok(Fetched {
                bytes,
                from_cache: true,
            });
        }
        let cache_dir = self.cache_dir.to_path_buf();
        let part = cache_dir.join(format!(".{key}.{}{PART_SUFFIX}", crate::link::random_id()));
        {
            let cache_dir = cache_dir.clone();
            blocking(move || make_private_dir(&cache_dir)).await?;
        }
        let bytes = self.download_to(uri, &part, cap).await?;
        let temp = temp.to_path_buf();
        blocking(move || {
            let committed = commit_to_cache(&part, &entry, &temp);
            if committed.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            committed?;
            evict(&cache_dir);
            Ok(())
        })
        .await?;
        Ok(Fetched {
            bytes,
            from_cache: false,
        })
    }

    /// Downloads `uri` into a new file at `path`, within `FETCH_DOWNLOAD_TIMEOUT_MS` and
    /// `cap`, and stops when the task is killed; nothing stays at `path` unless it succeeded.
    async fn download_to(&mut self, uri: &str, path: &Path, cap: Cap) -> Result<u64, FetchFailure> {
        let client = self.client().await?;
        let file = {
            let path = path.to_path_buf();
            blocking(move || create_new(&path)).await?
        };
        let mut file = tokio::fs::File::from_std(file);
        let downloaded = tokio::select! {
            done = tokio::time::timeout(
                Duration::from_millis(FETCH_DOWNLOAD_TIMEOUT_MS),
                download(&client, uri, &mut file, cap, self.policy.allow_local_fetch),
            ) => done.unwrap_or(Err(FetchFailure::TimedOut(FETCH_DOWNLOAD_TIMEOUT_MS))),
            _ = self.cancel.cancelled() => Err(FetchFailure::Cancelled),
        };
        drop(file);
        if downloaded.is_err() {
            let _ = tokio::fs::remove_file(path).await;
        }
        downloaded
    }

    async fn client(&mut self) -> Result<DownloadClient, FetchFailure> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let roots = blocking(|| Ok(registry::system_roots())).await?;
        let client = registry::download_client(roots, true).map_err(FetchFailure::Refused)?;
        self.client = Some(client.clone());
        Ok(client)
    }
}

/// GETs `uri` into `file`, following at most `FETCH_REDIRECTS_MAX` redirects (none from
/// https to http), within `cap`: the bytes written.
async fn download(
    client: &DownloadClient,
    uri: &str,
    file: &mut tokio::fs::File,
    cap: Cap,
    allow_local: bool,
) -> Result<u64, FetchFailure> {
    let mut url = uri.to_string();
    let mut redirects = 0;
    let response = loop {
        let response = registry::send(client, &url, None, None).await?;
        // Checked on the connection itself (no name resolved twice), before anything of the
        // answer is used: redirects included.
        if !allow_local {
            let peer = response
                .extensions()
                .get::<hyper_util::client::legacy::connect::HttpInfo>()
                .map(|info| info.remote_addr().ip());
            match peer {
                Some(ip) if !is_local(ip) => {}
                Some(ip) => {
                    return Err(FetchFailure::Refused(format!(
                        "{url} is at {ip}, a loopback or link-local address of the agent; its operator may allow it (agent.toml `allow_local_fetch = true`, `dcos-rs up --allow-local-fetch`)"
                    )))
                }
                None => {
                    return Err(FetchFailure::Refused(format!(
                        "{url}: the server's address is unknown"
                    )))
                }
            }
        }
        let status = response.status();
        if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
            break response;
        }
        redirects += 1;
        if redirects > FETCH_REDIRECTS_MAX {
            return Err(FetchFailure::Refused(format!(
                "more than {FETCH_REDIRECTS_MAX} redirects"
            )));
        }
        let next = registry::redirect_target(&url, &response).ok_or_else(|| {
            FetchFailure::Refused(format!("{url} answered {status} without a usable Location"))
        })?;
        if is_downgrade(&url, &next) {
            return Err(FetchFailure::Refused(format!(
                "{url} redirects to {next}: a redirect from https to http is refused"
            )));
        }
        url = next;
    };
    let status = response.status();
    if status != StatusCode::OK {
        return Err(FetchFailure::Status(match url == uri {
            true => status.to_string(),
            false => format!("{status} from {url}"),
        }));
    }
    if registry::content_length(&response).is_some_and(|n| n > cap.bytes) {
        return Err(cap.exceeded());
    }
    let mut body = response.into_body();
    let mut out = tokio::io::BufWriter::with_capacity(FETCH_WRITE_BUFFER_BYTES, file);
    let mut written_bytes: u64 = 0;
    while let Some(chunk) = registry::next_chunk(&mut body, &url).await? {
        written_bytes += chunk.len() as u64;
        if written_bytes > cap.bytes {
            return Err(cap.exceeded());
        }
        out.write_all(&chunk)
            .await
            .map_err(io_failure("writing the download".to_string()))?;
    }
    out.flush()
        .await
        .map_err(io_failure("writing the download".to_string()))?;
    Ok(written_bytes)
}

/// Addresses that reach the agent's host itself or its link (loopback, link-local such as
/// a cloud's metadata service, unspecified), also as IPv4-mapped IPv6.
fn is_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local(v4.into()),
            None => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

/// True when a redirect from `from` to `to` leaves https (for http: a downgrade).
fn is_downgrade(from: &str, to: &str) -> bool {
    let is_https = |url: &str| {
        url.split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"))
    };
    is_https(from) && !is_https(to)
}

/// Runs a step of files and directories on the blocking pool: never cut short (a killed
/// task's fetch stops between steps), so the sandbox can be removed after it.
async fn blocking<T, F>(step: F) -> Result<T, FetchFailure>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, FetchFailure> + Send + 'static,
{
    match tokio::task::spawn_blocking(step).await {
        Ok(result) => result,
        Err(e) => Err(FetchFailure::Io {
            context: "a fetch step".to_string(),
            error: std::io::Error::other(e.to_string()),
        }),
    }
}

fn io_failure(context: String) -> impl FnOnce(std::io::Error) -> FetchFailure {
    move |error| FetchFailure::Io { context, error }
}

/// Where an artifact comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    Http,
    /// A path on this host.
    File(&'a str),
}

fn source_of(uri: &str) -> Result<Source<'_>, String> {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Source::Http);
    }
    let Some(rest) = uri.strip_prefix("file://") else {
        return Err(format!(
            "{uri}: only http://, https:// and file:// URIs are fetched"
        ));
    };
    let path = rest
        .strip_prefix("localhost")
        .filter(|path| path.starts_with('/'))
        .unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(format!(
            "{uri} names another host: a file:// URI is a path on the agent (file:///path)"
        ));
    }
    Ok(Source::File(path))
}

/// The artifact's file name in the sandbox: `output_file`, else the URI's last path
/// segment without query or fragment.
fn output_name(uri: &str, output_file: Option<&str>) -> Result<String, String> {
    if let Some(name) = output_file {
        check_file_name(name).map_err(|reason| format!("outputFile {reason}"))?;
        return Ok(name.to_string());
    }
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = after_scheme.split(['?', '#']).next().unwrap_or_default();
    // No `/` after the scheme: only a host, which names no file.
    let name = path.rsplit_once('/').map_or("", |(_, last)| last);
    check_file_name(name).map_err(|_| {
        format!("{uri} names no file to save it as ({name:?}): give the artifact an outputFile")
    })?;
    Ok(name.to_string())
}

/// A plain file name: no `/`, not `.` or `..`, at most `FILE_NAME_MAX_BYTES`.
fn check_file_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= FILE_NAME_MAX_BYTES
        && !name.contains(['/', '\0']);
    match plain {
        true => Ok(()),
        false => Err(format!(
            "{name:?} is not a plain file name (no '/', not '.' or '..', at most {FILE_NAME_MAX_BYTES} bytes)"
        )),
    }
}

/// What `extract` does with an artifact, by its name (as Mesos decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    /// Kept as it is.
    Plain,
    Tar,
    TarGz,
    /// One gzip'd file, unpacked beside it under its name without `.gz`.
    Gz,
    /// An archive Mesos unpacks and this agent does not (its extension): kept as a file.
    Unsupported(&'static str),
}

fn archive_kind(name: &str) -> ArchiveKind {
    const UNSUPPORTED: [&str; 5] = [".tar.bz2", ".tar.xz", ".tbz2", ".txz", ".zip"];
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        ArchiveKind::TarGz
    } else if name.ends_with(".tar") {
        ArchiveKind::Tar
    } else if let Some(extension) = UNSUPPORTED
        .into_iter()
        .find(|extension| name.ends_with(extension))
    {
        ArchiveKind::Unsupported(extension)
    } else if name.ends_with(".gz") {
        ArchiveKind::Gz
    } else {
        ArchiveKind::Plain
    }
}

/// The name a gzip'd file unpacks to.
fn gunzipped_name(name: &str) -> Result<&str, String> {
    let plain = name.strip_suffix(".gz").unwrap_or(name);
    check_file_name(plain)
        .map(|()| plain)
        .map_err(|_| format!("{name}: without .gz nothing usable is left of the name"))
}

/// The cache's name for the artifact at `uri`: the sha256 of the URI, in hex.
fn cache_key(uri: &str) -> String {
    Digest::of_bytes(uri.as_bytes()).hex().to_string()
}

fn is_cache_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The components of an archive entry's path below the directory it unpacks into (empty
/// for the directory itself), or why it would leave it: an absolute path, `..`.
fn entry_components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    let shown = String::from_utf8_lossy(raw);
    if raw.len() > ENTRY_PATH_MAX_BYTES {
        return Err(format!(
            "an entry's path is longer than {ENTRY_PATH_MAX_BYTES} bytes"
        ));
    }
    if raw.starts_with(b"/") {
        return Err(format!("{shown} is an absolute path"));
    }
    let mut components = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(format!("{shown} climbs out with '..'")),
            name => components.push(OsStr::from_bytes(name).to_os_string()),
        }
    }
    Ok(components)
}

/// True when a symbolic link at `link` (its components below the directory) pointing to
/// `target` stays inside the directory, read as text: relative, and its `..` never climb
/// above the directory.
fn link_stays_inside(link: &[OsString], target: &[u8]) -> bool {
    if target.is_empty() || target.starts_with(b"/") {
        return false;
    }
    let mut depth = link.len().saturating_sub(1);
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if depth == 0 => return false,
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    true
}

/// Which cached artifacts go, as indexes into `entries` ((last use in ms, bytes)): the
/// least recently used first, until at most `max_entries` and `max_bytes` are left.
fn evictions(entries: &[(u64, u64)], max_bytes: u64, max_entries: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].0, i));
    let mut kept_bytes: u64 = entries.iter().map(|(_, bytes)| bytes).sum();
    let mut kept = entries.len();
    let mut evicted = Vec::new();
    for i in order {
        if kept_bytes <= max_bytes && kept <= max_entries {
            break;
        }
        kept_bytes -= entries[i].1;
        kept -= 1;
        evicted.push(i);
    }
    evicted
}

/// A new file at `path` for writing, private until installed: never an existing file or a
/// link.
fn create_new(path: &Path) -> Result<File, FetchFailure> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_failure(format!("creating {}", path.display())))
}

/// Copies `reader` into a new file at `path`: the file and the bytes, or `None` past
/// `limit_bytes` (what was written stays for the caller to remove with the sandbox).
fn copy_bounded(
    reader: impl Read,
    path: &Path,
    limit_bytes: u64,
) -> Result<Option<(File, u64)>, FetchFailure> {
    let mut out = BufWriter::with_capacity(FETCH_WRITE_BUFFER_BYTES, create_new(path)?);
    let copied = std::io::copy(&mut reader.take(limit_bytes.saturating_add(1)), &mut out)
        .map_err(io_failure(format!("copying to {}", path.display())))?;
    if copied > limit_bytes {
        return Ok(None);
    }
    let file = out
        .into_inner()
        .map_err(|e| io_failure(format!("writing {}", path.display()))(e.into_error()))?;
    Ok(Some((file, copied)))
}

/// Opens the host file at `path` (resolved already) for reading with the task's
/// credentials: filesystem uid `uid`, gid `gid` and no other group, so the task gets no file
/// its user could not read. On a thread started for this alone, never one of a pool: only
/// that thread's filesystem ids change (per-thread syscalls), and they end with it. A link
/// as the last component and anything but a regular file are refused.
fn open_as(path: &Path, uid: u32, gid: u32) -> Result<File, FetchFailure> {
    let owned = path.to_path_buf();
    let opener = std::thread::Builder::new()
        .name("fetch-open-as".to_string())
        .spawn(move || {
            take_fs_credentials(uid, gid)?;
            open_regular_file(&owned, uid, gid)
        })
        .map_err(io_failure(format!(
            "starting a thread to open {}",
            path.display()
        )))?;
    opener.join().unwrap_or_else(|_| {
        Err(FetchFailure::Refused(format!(
            "opening {} as {uid}:{gid}: the thread opening it panicked",
            path.display()
        )))
    })
}

/// Makes the calling thread's filesystem ids `uid` and `gid`, with `gid` its only group,
/// and checks each took (read back, as setfsuid(2) advises): an error, and nothing opened,
/// when one did not. Raw syscalls, which change this thread alone (glibc's setgroups
/// changes every thread of the process); setfsuid from 0 to another id also drops this
/// thread's filesystem capabilities (CAP_DAC_OVERRIDE, ...). Only for a thread that ends
/// right after (`open_as`).
fn take_fs_credentials(uid: u32, gid: u32) -> Result<(), FetchFailure> {
    let groups: [libc::gid_t; 1] = [gid];
    // SAFETY: setgroups reads `groups.len()` ids from the live array and changes only the
    // calling thread's credentials.
    let set = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_int,
            groups.as_ptr(),
        )
    };
    if set != 0 {
        return Err(io_failure(format!("taking the task's group {gid}"))(
            std::io::Error::last_os_error(),
        ));
    }
    let mut read_back: [libc::gid_t; 2] = [0; 2];
    // SAFETY: getgroups writes at most `read_back.len()` ids into the live array.
    let count = unsafe {
        libc::syscall(
            libc::SYS_getgroups,
            read_back.len() as libc::c_int,
            read_back.as_mut_ptr(),
        )
    };
    let not_taken = |what: String| {
        FetchFailure::Refused(format!(
            "could not take the task's {what} to open a file:// artifact"
        ))
    };
    if count != 1 || read_back[0] != gid {
        return Err(not_taken(format!("group {gid}")));
    }
    // SAFETY: setfsgid and setfsuid take an id and change only the calling thread's
    // filesystem id; an invalid one (-1) changes nothing and returns the current id.
    let fsgid = unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsgid, libc::gid_t::MAX)
    };
    if fsgid != gid as libc::c_long {
        return Err(not_taken(format!("filesystem gid {gid}")));
    }
    // SAFETY: as above.
    let fsuid = unsafe {
        libc::syscall(libc::SYS_setfsuid, uid);
        libc::syscall(libc::SYS_setfsuid, libc::uid_t::MAX)
    };
    if fsuid != uid as libc::c_long {
        return Err(not_taken(format!("filesystem uid {uid}")));
    }
    Ok(())
}

/// Opens `path` for reading, a regular file and not a link, as the calling thread's
/// filesystem ids (`uid`:`gid`, named in the refusal) allow.
fn open_regular_file(path: &Path, uid: u32, gid: u32) -> Result<File, FetchFailure> {
    // O_NONBLOCK: opening a fifo must not wait for a writer (it is refused below); no
    // effect on a regular file. O_NOFOLLOW: resolved already, so a link here was swapped in.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let source = match opened {
        Ok(source) => source,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(FetchFailure::Refused(format!(
                "{} is not readable by the task's user ({uid}:{gid})",
                path.display()
            )))
        }
        Err(e) => return Err(io_failure(format!("opening {}", path.display()))(e)),
    };
    let metadata = source
        .metadata()
        .map_err(io_failure(format!("reading {}", path.display())))?;
    if !metadata.is_file() {
        return Err(FetchFailure::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(source)
}

/// Copies a host file opened already (`open_as`) to `temp`, within `cap`.
fn copy_host_file(source: File, temp: &Path, cap: Cap) -> Result<u64, FetchFailure> {
    let metadata = source
        .metadata()
        .map_err(io_failure("reading the host file".to_string()))?;
    if metadata.len() > cap.bytes {
        return Err(cap.exceeded());
    }
    match copy_bounded(source, temp, cap.bytes)? {
        Some((_, bytes)) => Ok(bytes),
        None => Err(cap.exceeded()),
    }
}

/// Copies the cached artifact `entry` to `temp` (`None`: not cached) within `cap`, marking
/// it used.
fn copy_from_cache(entry: &Path, temp: &Path, cap: Cap) -> Result<Option<u64>, FetchFailure> {
    let source = match File::open(entry) {
        Ok(source) => source,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_failure(format!("opening {}", entry.display()))(e)),
    };
    // Its modification time is its last use: eviction takes the oldest first.
    let _ = source.set_modified(SystemTime::now());
    match copy_bounded(source, temp, cap.bytes)? {
        Some((_, bytes)) => Ok(Some(bytes)),
        None => Err(cap.exceeded()),
    }
}

/// Copies a finished download (`part`) to `temp`, then makes it the cache's `entry` (synced,
/// then renamed: a crash leaves the old entry or the new, never half of one).
fn commit_to_cache(part: &Path, entry: &Path, temp: &Path) -> Result<(), FetchFailure> {
    let source = File::open(part).map_err(io_failure(format!("opening {}", part.display())))?;
    source
        .sync_all()
        .map_err(io_failure(format!("syncing {}", part.display())))?;
    if copy_bounded(source, temp, FETCH_MAX_BYTES)?.is_none() {
        return Err(FetchFailure::TooLarge {
            what: "the artifact",
            limit_bytes: FETCH_MAX_BYTES,
        });
    }
    std::fs::rename(part, entry).map_err(io_failure(format!(
        "renaming {} to {}",
        part.display(),
        entry.display()
    )))
}

/// Keeps the cache within `FETCH_CACHE_MAX_BYTES` and `FETCH_CACHE_ENTRIES_MAX`, and removes
/// downloads a crash cut short (untouched for longer than a download may take).
fn evict(cache_dir: &Path) {
    let Ok(listing) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let now_ms = ms_since_epoch(SystemTime::now());
    let mut paths = Vec::new();
    let mut entries = Vec::new();
    for dirent in listing.flatten() {
        let Ok(metadata) = dirent.metadata() else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        let used_ms = metadata.modified().map_or(0, ms_since_epoch);
        let name = dirent.file_name();
        let name = name.to_string_lossy();
        if is_cache_key(&name) {
            paths.push(dirent.path());
            entries.push((used_ms, metadata.len()));
        } else if name.ends_with(PART_SUFFIX)
            && now_ms.saturating_sub(used_ms) > FETCH_DOWNLOAD_TIMEOUT_MS
        {
            let _ = std::fs::remove_file(dirent.path());
        }
    }
    for i in evictions(&entries, FETCH_CACHE_MAX_BYTES, FETCH_CACHE_ENTRIES_MAX) {
        if let Err(e) = std::fs::remove_file(&paths[i]) {
            tracing::warn!(
                "evicting {} from the artifact cache: {e}",
                paths[i].display()
            );
        }
    }
}

fn ms_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn make_private_dir(path: &Path) -> Result<(), FetchFailure> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_failure(format!("creating {}", path.display())))
}

/// Gives `dest` and everything in it to `uid`:`gid`, entries before the directories that
/// hold them and `dest` itself last: until then the task's user cannot reach into it.
/// Never through a link (lchown). Nothing else writes in `dest` meanwhile (root's own, 0700),
/// so it is walked by path; the walk keeps one listing per level, no open directory.
fn hand_over(dest: &Path, uid: u32, gid: u32) -> Result<(), FetchFailure> {
    let give = |path: &Path| {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(io_failure(format!("chown {uid}:{gid} {}", path.display())))
    };
    // Directories being handed over, each with its entries still to go.
    let mut stack = vec![(dest.to_path_buf(), listing(dest)?)];
    loop {
        let Some((_, entries)) = stack.last_mut() else {
            return Ok(());
        };
        match entries.pop() {
            Some((path, true)) => {
                let inner = listing(&path)?;
                stack.push((path, inner));
            }
            Some((path, false)) => give(&path)?,
            None => {
                let (dir, _) = stack.pop().expect("a directory is on the stack");
                give(&dir)?;
            }
        }
    }
}

/// The entries of `dir`, each with whether it is a directory (a link never is).
fn listing(dir: &Path) -> Result<Vec<(PathBuf, bool)>, FetchFailure> {
    let reading = || io_failure(format!("reading {}", dir.display()));
    std::fs::read_dir(dir)
        .map_err(reading())?
        .map(|dirent| -> Result<(PathBuf, bool), FetchFailure> {
            let dirent = dirent.map_err(reading())?;
            let file_type = dirent.file_type().map_err(reading())?;
            Ok((dirent.path(), file_type.is_dir()))
        })
        .collect()
}

/// Gives the finished file at `temp` its mode, then its name: the mode through the file
/// itself, never through a link in its place.
fn install(temp: &Path, target: &Path, mode: u32) -> Result<(), FetchFailure> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(temp)
        .map_err(io_failure(format!("opening {}", temp.display())))?;
    let is_file = file
        .metadata()
        .map_err(io_failure(format!("reading {}", temp.display())))?
        .is_file();
    if !is_file {
        return Err(FetchFailure::Refused(format!(
            "{} is no longer the file written",
            temp.display()
        )));
    }
    finish_file(&file, temp, mode)?;
    drop(file);
    std::fs::rename(temp, target).map_err(io_failure(format!(
        "renaming {} to {}",
        temp.display(),
        target.display()
    )))
}

/// Gives a file written here (open) its mode.
fn finish_file(file: &File, path: &Path, mode: u32) -> Result<(), FetchFailure> {
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_failure(format!("chmod {mode:o} {}", path.display())))
}

/// Unpacks the artifact `name` in `dest` as `kind` says, into `dest`, within the task's
/// `budget` (of which `used_bytes` are taken): the bytes unpacked.
fn unpack(
    kind: ArchiveKind,
    name: &str,
    dest: &Path,
    budget: ByteBudget,
    used_bytes: u64,
) -> Result<u64, FetchFailure> {
    let archive = dest.join(name);
    let open = || {
        File::open(&archive)
            .map(|file| BufReader::with_capacity(FETCH_WRITE_BUFFER_BYTES, file))
            .map_err(io_failure(format!("opening {}", archive.display())))
    };
    match kind {
        // (Unsupported ones are kept as they are: `Fetcher::fetch` made them plain.)
        ArchiveKind::Plain | ArchiveKind::Unsupported(_) => Ok(0),
        ArchiveKind::Tar => untar(open()?, dest, budget, used_bytes),
        ArchiveKind::TarGz => untar(MultiGzDecoder::new(open()?), dest, budget, used_bytes),
        ArchiveKind::Gz => {
            let plain = gunzipped_name(name).map_err(FetchFailure::Refused)?;
            let temp = dest.join(format!(".{plain}.fetching"));
            let cap = Cap::new(
                "the unpacked file",
                FETCH_EXTRACT_MAX_BYTES,
                FETCH_EXTRACT_MAX_BYTES,
                budget,
                used_bytes,
            );
            let Some((file, bytes)) = copy_bounded(MultiGzDecoder::new(open()?), &temp, cap.bytes)?
            else {
                return Err(cap.exceeded());
            };
            drop(file);
            install(&temp, &dest.join(plain), FILE_MODE)?;
            Ok(bytes)
        }
    }
}

fn archive_failure(error: std::io::Error) -> FetchFailure {
    FetchFailure::Archive(format!("reading the archive: {error}"))
}

/// Unpacks a tar stream into `dest` (see the module comment for what is refused), within
/// the task's `budget` (of which `used_bytes` are taken): the bytes unpacked.
fn untar(
    reader: impl Read,
    dest: &Path,
    budget: ByteBudget,
    used_bytes: u64,
) -> Result<u64, FetchFailure> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacked_bytes: u64 = 0;
    let entries = archive.entries().map_err(archive_failure)?;
    for (count, entry) in (1u64..).zip(entries) {
        if count > FETCH_EXTRACT_ENTRIES_MAX {
            return Err(FetchFailure::Archive(format!(
                "more than {FETCH_EXTRACT_ENTRIES_MAX} entries"
            )));
        }
        let mut entry = entry.map_err(archive_failure)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let components = entry_components(&raw_path).map_err(FetchFailure::Archive)?;
        let Some((name, parents)) = components.split_last() else {
            continue; // the directory itself (`./`)
        };
        let path = walk_inside(dest, parents, true)?.join(name);
        if kind.is_dir() {
            make_dir(&path, &shown)?;
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            clear_way(&path, &shown)?;
            let executable = entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0);
            let mtime = entry.header().mtime().ok();
            let cap = Cap::new(
                "the archive's contents",
                FETCH_EXTRACT_MAX_BYTES,
                FETCH_EXTRACT_MAX_BYTES - unpacked_bytes,
                budget,
                used_bytes + unpacked_bytes,
            );
            let Some((file, bytes)) = copy_bounded(&mut entry, &path, cap.bytes)? else {
                return Err(cap.exceeded());
            };
            unpacked_bytes += bytes;
            let mode = match executable {
                true => EXECUTABLE_MODE,
                false => FILE_MODE,
            };
            finish_file(&file, &path, mode)?;
            if let Some(mtime) = mtime {
                let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
            }
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(Cow::into_owned)
                .unwrap_or_default();
            if !link_stays_inside(&components, &target) {
                return Err(FetchFailure::Archive(format!(
                    "{shown} is a symbolic link to {}, outside the directory",
                    String::from_utf8_lossy(&target)
                )));
            }
            clear_way(&path, &shown)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                .map_err(io_failure(format!("creating the link {}", path.display())))?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(Cow::into_owned)
                .unwrap_or_default();
            let existing = hard_link_target(dest, &target, &shown)?;
            clear_way(&path, &shown)?;
            std::fs::hard_link(&existing, &path)
                .map_err(io_failure(format!("creating the link {}", path.display())))?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            return Err(FetchFailure::Archive(format!(
                "{shown} is a device file or a fifo"
            )));
        } else {
            return Err(FetchFailure::Archive(format!(
                "{shown} is an entry of type {:?}, which is not unpacked",
                kind.as_byte() as char
            )));
        }
    }
    Ok(unpacked_bytes)
}

/// The file a hard link entry names: unpacked before it, inside `dest`, reached through no
/// symbolic link.
fn hard_link_target(dest: &Path, target: &[u8], shown: &str) -> Result<PathBuf, FetchFailure> {
    let components = entry_components(target)
        .map_err(|reason| FetchFailure::Archive(format!("{shown} is a hard link: {reason}")))?;
    let Some((name, parents)) = components.split_last() else {
        return Err(FetchFailure::Archive(format!(
            "{shown} is a hard link to the directory itself"
        )));
    };
    let existing = walk_inside(dest, parents, false)?.join(name);
    if !existing.symlink_metadata().is_ok_and(|m| m.is_file()) {
        return Err(FetchFailure::Archive(format!(
            "{shown} is a hard link to {}, which is no file unpacked before it",
            String::from_utf8_lossy(target)
        )));
    }
    Ok(existing)
}

/// `dest` joined with `components`, every one a real directory (made when missing and
/// `create`): never a symbolic link, so nothing lands outside `dest`.
fn walk_inside(
    dest: &Path,
    components: &[OsString],
    create: bool,
) -> Result<PathBuf, FetchFailure> {
    let mut path = dest.to_path_buf();
    for component in components {
        path.push(component);
        let shown = || {
            let relative = path.strip_prefix(dest).unwrap_or(path.as_path());
            relative.display().to_string()
        };
        match path.symlink_metadata() {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(FetchFailure::Archive(format!(
                    "{} is a symbolic link: nothing is unpacked through one",
                    shown()
                )))
            }
            Ok(_) => {
                return Err(FetchFailure::Archive(format!(
                    "{} is not a directory",
                    shown()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                make_dir(&path, &shown())?
            }
            Err(e) => return Err(io_failure(format!("looking at {}", path.display()))(e)),
        }
    }
    Ok(path)
}

/// A directory at `path` (replacing a file or link there), mode 0755: the mode through the
/// directory itself, never through a link in its place.
fn make_dir(path: &Path, shown: &str) -> Result<(), FetchFailure> {
    if !path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        clear_way(path, shown)?;
        std::fs::create_dir(path).map_err(io_failure(format!("creating {}", path.display())))?;
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_failure(format!("opening {}", path.display())))?;
    dir.set_permissions(Permissions::from_mode(DIR_MODE))
        .map_err(io_failure(format!("chmod {DIR_MODE:o} {}", path.display())))
}

/// Removes a file or link where an entry goes (a later entry replaces an earlier one, as
/// with tar); a directory there is refused.
fn clear_way(path: &Path, shown: &str) -> Result<(), FetchFailure> {
    match path.symlink_metadata() {
        Ok(metadata) if metadata.is_dir() => Err(FetchFailure::Archive(format!(
            "{shown}: a directory of that name is in the way"
        ))),
        Ok(_) => {
            std::fs::remove_file(path).map_err(io_failure(format!("replacing {}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_failure(format!("looking at {}", path.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcos_runtime::testimage::LayerTar;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    #[test]
    fn output_names_come_from_the_uri_or_from_output_file() {
        let cases: [(&str, Option<&str>, Result<&str, ()>); 11] = [
            (
                "https://h/a/b/app.tar.gz?sig=1/x#frag",
                None,
                Ok("app.tar.gz"),
            ),
            ("http://h:8080/tool", None, Ok("tool")),
            ("file:///srv/data/x.bin", None, Ok("x.bin")),
            ("https://h/a/", None, Err(())),
            ("https://h", None, Err(())),
            ("https://h/..", None, Err(())),
            ("https://h/?q=a", None, Err(())),
            ("https://h/a/", Some("named"), Ok("named")),
            ("https://h/x", Some("a/b"), Err(())),
            ("https://h/x", Some(".."), Err(())),
            ("https://h/x", Some(""), Err(())),
        ];
        for (uri, output_file, expected) in cases {
            assert_eq!(
                output_name(uri, output_file).map_err(|_| ()),
                expected.map(str::to_string),
                "{uri} {output_file:?}"
            );
        }
        let error = output_name("https://h/", None).unwrap_err();
        assert!(error.contains("outputFile"), "{error}");
    }

    #[test]
    fn only_http_and_local_file_uris_are_sources() {
        assert_eq!(source_of("https://h/x"), Ok(Source::Http));
        assert_eq!(source_of("http://h/x"), Ok(Source::Http));
        assert_eq!(source_of("file:///srv/x"), Ok(Source::File("/srv/x")));
        assert_eq!(
            source_of("file://localhost/srv/x"),
            Ok(Source::File("/srv/x"))
        );
        assert!(source_of("file://other/srv/x").is_err());
        assert!(source_of("file://localhostx/srv").is_err());
        assert!(source_of("ftp://h/x").is_err());
    }

    #[test]
    fn archive_kinds_follow_the_name_as_in_mesos() {
        use super::ArchiveKind::*;
        for (name, kind) in [
            ("a.tar", Tar),
            ("a.tar.gz", TarGz),
            ("a.tgz", TarGz),
            ("notes.txt.gz", Gz),
            ("a.zip", Unsupported(".zip")),
            ("a.tbz2", Unsupported(".tbz2")),
            ("a.txz", Unsupported(".txz")),
            ("a.tar.xz", Unsupported(".tar.xz")),
            ("a.tar.bz2", Unsupported(".tar.bz2")),
            ("a.jar", Plain),
            ("tar", Plain),
        ] {
            assert_eq!(archive_kind(name), kind, "{name}");
        }
        assert_eq!(gunzipped_name("notes.txt.gz"), Ok("notes.txt"));
        assert!(gunzipped_name(".gz").is_err());
        assert!(gunzipped_name("..gz").is_err());
    }

    #[test]
    fn archive_entries_cannot_name_a_path_outside() {
        let joined = |raw: &[u8]| {
            entry_components(raw).map(|components| {
                let parts: Vec<String> = components
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                parts.join("/")
            })
        };
        assert_eq!(joined(b"./bin//run"), Ok("bin/run".to_string()));
        assert_eq!(joined(b"./"), Ok(String::new()));
        for bad in [&b"/etc/passwd"[..], b"../x", b"a/../../x", b"a/.."] {
            assert!(
                entry_components(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(entry_components(&[b'a'; ENTRY_PATH_MAX_BYTES + 1]).is_err());
    }

    #[test]
    fn links_may_point_only_inside() {
        let at = |path: &str| -> Vec<OsString> { path.split('/').map(OsString::from).collect() };
        assert!(link_stays_inside(&at("latest"), b"bin/run"));
        assert!(link_stays_inside(&at("lib/libx.so"), b"../lib64/libx.so.1"));
        assert!(link_stays_inside(&at("a/b/c"), b"./../../d"));
        assert!(!link_stays_inside(&at("latest"), b"../outside"));
        assert!(!link_stays_inside(&at("a/b"), b"../../x"));
        assert!(!link_stays_inside(&at("x"), b"/etc/shadow"));
        assert!(!link_stays_inside(&at("x"), b""));
    }

    #[test]
    fn cache_keys_are_the_sha256_of_the_uri() {
        let key = cache_key("https://h/a.tgz");
        assert!(is_cache_key(&key), "{key}");
        assert_eq!(key, cache_key("https://h/a.tgz"));
        assert_ne!(key, cache_key("https://h/a.tgz?v=2"));
        assert!(!is_cache_key(&format!(".{key}.x{PART_SUFFIX}")));
    }

    #[test]
    fn the_least_recently_used_artifacts_are_evicted_first() {
        // (last use in ms, bytes)
        let entries = [(30, 400), (10, 300), (20, 300)];
        assert_eq!(evictions(&entries, 1000, 10), Vec::<usize>::new());
        assert_eq!(evictions(&entries, 700, 10), vec![1]);
        assert_eq!(evictions(&entries, 400, 10), vec![1, 2]);
        assert_eq!(evictions(&entries, 10_000, 1), vec![1, 2]);
        assert_eq!(evictions(&entries, 0, 10), vec![1, 2, 0]);
    }

    #[test]
    fn loopback_link_local_and_unspecified_addresses_are_local() {
        for (ip, local) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.77.0.2", false),
            ("93.184.216.34", false),
            ("2001:db8::1", false),
        ] {
            assert_eq!(is_local(ip.parse().unwrap()), local, "{ip}");
        }
    }

    #[test]
    fn redirects_from_https_to_http_are_downgrades() {
        for (from, to, downgrade) in [
            ("https://h/a", "http://h/a", true),
            ("HTTPS://h/a", "http://other/b", true),
            ("https://h/a", "https://mirror/a", false),
            ("http://h/a", "http://h/b", false),
            ("http://h/a", "https://h/a", false),
        ] {
            assert_eq!(is_downgrade(from, to), downgrade, "{from} -> {to}");
        }
    }

    #[test]
    fn a_task_fetches_at_most_its_disk_and_never_more_than_the_agent_limit() {
        let mib: u64 = 1 << 20;
        let none = ByteBudget::for_task(0);
        assert_eq!(none.limit_bytes, FETCH_TASK_MAX_BYTES);
        assert_eq!(ByteBudget::for_task(64).limit_bytes, 64 * mib);
        assert_eq!(ByteBudget::for_task(u64::MAX), none);
        assert_eq!(
            ByteBudget::for_task(64).exceeded().to_string(),
            "the task's artifacts exceed its disk of 64 MiB"
        );
        assert!(none
            .exceeded()
            .to_string()
            .starts_with("the task's artifacts exceed 16384 MiB"));

        // The lesser of the step's own limit and what is left of the budget.
        let budget = ByteBudget::for_task(64);
        let cap = Cap::artifact(budget, 60 * mib);
        assert_eq!((cap.bytes, cap.over), (4 * mib, Over::Budget(budget)));
        let cap = Cap::artifact(budget, 70 * mib);
        assert_eq!(cap.bytes, 0, "spent already");
        let cap = Cap::new("the archive's contents", 100, 40, none, 0);
        assert_eq!(cap.bytes, 40);
        assert_eq!(
            cap.exceeded().to_string(),
            "the archive's contents is larger than 100 bytes"
        );
    }

    #[test]
    fn a_fetched_directory_is_handed_over_last_and_never_through_a_link() {
        use std::os::unix::fs::MetadataExt;
        // chown to another user needs root (as in CI).
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        let outside_owner = {
            let m = std::fs::metadata(&outside).unwrap();
            (m.uid(), m.gid())
        };
        let dest = root.path().join("work");
        std::fs::create_dir_all(dest.join("a/b")).unwrap();
        std::fs::write(dest.join("a/b/file"), b"f").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("a/link")).unwrap();
        hand_over(&dest, 65534, 65533).unwrap();
        for path in [
            dest.clone(),
            dest.join("a"),
            dest.join("a/b"),
            dest.join("a/b/file"),
            dest.join("a/link"),
        ] {
            let m = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65533), "{}", path.display());
        }
        let m = std::fs::metadata(&outside).unwrap();
        assert_eq!((m.uid(), m.gid()), outside_owner, "not through the link");
    }

    #[test]
    fn host_files_are_opened_with_the_tasks_credentials() {
        // Switching to another user's credentials needs root (as in CI).
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o755)).unwrap();
        let secret = root.path().join("secret");
        let public = root.path().join("public");
        std::fs::write(&secret, b"secret").unwrap();
        std::fs::set_permissions(&secret, Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&public, b"public").unwrap();
        std::fs::set_permissions(&public, Permissions::from_mode(0o644)).unwrap();

        let error = open_as(&secret, 65534, 65534).unwrap_err();
        assert!(matches!(error, FetchFailure::Refused(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("not readable by the task's user (65534:65534)"),
            "{error}"
        );
        let mut text = String::new();
        open_as(&public, 65534, 65534)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "public");
        // Only the opening thread changed: this one reads as root still.
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&public, &link).unwrap();
        assert!(
            open_as(&link, 65534, 65534).is_err(),
            "never through a link"
        );
        let error = open_as(root.path(), 65534, 65534).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }

    fn item(uri: &str, extract: bool, executable: bool, cache: bool) -> TaskFetch {
        TaskFetch {
            uri: uri.to_string(),
            extract,
            executable,
            cache,
            output_file: None,
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn http_response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut response = head.into_bytes();
        response.extend_from_slice(body);
        response
    }

    /// Answers each request with the canned response of its path (404 for others), one
    /// request per connection.
    async fn serve(listener: tokio::net::TcpListener, routes: Vec<(&'static str, Vec<u8>)>) {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let path = text.split_whitespace().nth(1).unwrap_or("/");
            let answer = routes
                .iter()
                .find(|(route, _)| *route == path)
                .map(|(_, answer)| answer.clone())
                .unwrap_or_else(|| http_response("404 Not Found", &[], b"no such file"));
            let _ = socket.write_all(&answer).await;
            let _ = socket.shutdown().await;
        }
    }

    #[tokio::test]
    async fn artifacts_are_downloaded_unpacked_refused_and_cached() {
        const RUN: &[u8] = b"#!/bin/sh\necho run\n";
        const TOOL: &[u8] = b"#!/bin/sh\necho tool\n";
        const ZIP: &[u8] = b"PK\x03\x04 kept as it is";
        let mut app = LayerTar::new();
        app.dir("bin", 0o700)
            .unwrap()
            .file("bin/run", 0o4755, RUN)
            .unwrap()
            .file("README", 0o600, b"read me\n")
            .unwrap()
            .symlink("latest", "bin/run")
            .unwrap()
            .hardlink("bin/again", "bin/run")
            .unwrap();
        let app = gzip(&app.finish().unwrap());
        let mut evil = LayerTar::new();
        evil.file("fine", 0o644, b"fine")
            .unwrap()
            .raw(tar::EntryType::Regular, b"../escape", b"", b"gotcha")
            .unwrap();
        let evil = evil.finish().unwrap();
        let routes = vec![
            (
                "/r/app.tar.gz",
                http_response("302 Found", &["Location: /files/app.tar.gz"], b""),
            ),
            ("/files/app.tar.gz", http_response("200 OK", &[], &app)),
            (
                "/notes.txt.gz",
                http_response("200 OK", &[], &gzip(b"notes\n")),
            ),
            ("/evil.tar", http_response("200 OK", &[], &evil)),
            ("/tool", http_response("200 OK", &[], TOOL)),
            ("/app.zip", http_response("200 OK", &[], ZIP)),
            (
                "/big",
                http_response("200 OK", &[], &vec![0; (1 << 20) + 1]),
            ),
            (
                "/zeros.gz",
                http_response("200 OK", &[], &gzip(&vec![0; (1 << 20) + 1])),
            ),
        ];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, routes));

        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let owner = Some((
            nix::unistd::Uid::effective().as_raw(),
            nix::unistd::Gid::effective().as_raw(),
        ));
        let policy = TaskPolicy {
            allow_local_fetch: true,
            ..TaskPolicy::default()
        };
        let budget = ByteBudget::for_task(0);
        let cancel = CancellationToken::new();
        let sandbox = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };

        // The server is on loopback: refused unless the agent's operator allows it.
        let refused = sandbox("refused");
        let error = fetch_all(
            &[item(&format!("{base}/tool"), false, true, false)],
            &refused,
            &cache,
            &TaskPolicy::default(),
            owner,
            budget,
            &cancel,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("loopback or link-local") && error.contains("allow_local_fetch"),
            "{error}"
        );

        // Through a redirect, unpacked beside the kept archive; a gzip'd file; an executable;
        // a zip, kept as it is (`extract` is Marathon's default: the app must still run).
        let first = sandbox("first");
        let items = [
            item(&format!("{base}/r/app.tar.gz"), true, false, false),
            item(&format!("{base}/notes.txt.gz"), true, false, false),
            item(&format!("{base}/tool"), false, true, true),
            item(&format!("{base}/app.zip"), true, false, false),
        ];
        let report = fetch_all(&items, &first, &cache, &policy, owner, budget, &cancel)
            .await
            .unwrap();
        assert_eq!((report.artifacts, report.from_cache), (4, 0));
        assert_eq!(std::fs::read(first.join("app.zip")).unwrap(), ZIP);
        assert_eq!(mode(&first.join("app.zip")), 0o644);
        assert!(
            first.join("app.tar.gz").is_file(),
            "kept, as Mesos keeps it"
        );
        assert_eq!(std::fs::read(first.join("bin/run")).unwrap(), RUN);
        assert_eq!(std::fs::read(first.join("bin/again")).unwrap(), RUN);
        assert_eq!(mode(&first.join("bin/run")), 0o755, "no setuid bit");
        assert_eq!(mode(&first.join("bin")), 0o755);
        assert_eq!(mode(&first.join("README")), 0o644);
        assert_eq!(
            std::fs::read_link(first.join("latest")).unwrap(),
            Path::new("bin/run")
        );
        assert_eq!(std::fs::read(first.join("notes.txt")).unwrap(), b"notes\n");
        assert_eq!(std::fs::read(first.join("tool")).unwrap(), TOOL);
        assert_eq!(mode(&first.join("tool")), 0o755);

        let error = fetch_all(
            &[item(&format!("{base}/missing/x"), false, false, false)],
            &sandbox("second"),
            &cache,
            &policy,
            owner,
            budget,
            &cancel,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("fetching {base}/missing/x: 404 Not Found")
        );

        let error = fetch_all(
            &[item(&format!("{base}/evil.tar"), true, false, false)],
            &sandbox("third"),
            &cache,
            &policy,
            owner,
            budget,
            &cancel,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("../escape"), "{error}");
        assert!(!root.path().join("escape").exists());

        // All of a task's artifacts, downloaded and unpacked, stay within its disk.
        let one_mib = ByteBudget::for_task(1);
        let too_much = [
            (format!("{base}/big"), false),
            (format!("{base}/zeros.gz"), true),
        ];
        for (uri, extract) in too_much {
            let error = fetch_all(
                &[item(&uri, extract, false, false)],
                &sandbox(if extract { "zeros" } else { "big" }),
                &cache,
                &policy,
                owner,
                one_mib,
                &cancel,
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(
                error.ends_with("the task's artifacts exceed its disk of 1 MiB"),
                "{error}"
            );
        }

        // The server is gone: the cached artifact still comes, and only from the cache.
        server.abort();
        let _ = server.await;
        let fourth = sandbox("fourth");
        let report = fetch_all(
            &[item(&format!("{base}/tool"), false, true, true)],
            &fourth,
            &cache,
            &policy,
            owner,
            budget,
            &cancel,
        )
        .await
        .unwrap();
        assert_eq!((report.artifacts, report.from_cache), (1, 1));
        assert_eq!(std::fs::read(fourth.join("tool")).unwrap(), TOOL);
        assert_eq!(mode(&fourth.join("tool")), 0o755);
        let error = fetch_all(
            &[item(&format!("{base}/tool"), false, true, false)],
            &sandbox("fifth"),
            &cache,
            &policy,
            owner,
            budget,
            &cancel,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("cannot reach"), "{error}");
        let cached: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            cached,
            vec![cache_key(&format!("{base}/tool"))],
            "no partial file"
        );
    }

    #[tokio::test]
    async fn host_files_come_only_from_under_host_paths_and_only_for_a_task_user() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("data.txt"), b"data\n").unwrap();
        let dest = root.path().join("sandbox");
        std::fs::create_dir(&dest).unwrap();
        let cache = root.path().join("cache");
        let budget = ByteBudget::for_task(0);
        let cancel = CancellationToken::new();
        let items = [item(
            &format!("file://{}", allowed.join("data.txt").display()),
            false,
            false,
            false,
        )];
        let error = fetch_all(
            &items,
            &dest,
            &cache,
            &TaskPolicy::default(),
            None,
            budget,
            &cancel,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("fetch[0].uri") && error.contains("host_paths"),
            "{error}"
        );
        let policy = TaskPolicy::default()
            .with_host_paths(std::slice::from_ref(&allowed), "host_paths")
            .unwrap();
        // Allowed, but no task user to open it as: never opened as root.
        let error = fetch_all(&items, &dest, &cache, &policy, None, budget, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(error.failure, FetchFailure::Refused(_)), "{error}");
        assert!(error.to_string().contains("task's user"), "{error}");
        assert!(!dest.join("data.txt").exists());

        // A killed task's fetch stops.
        let killed = CancellationToken::new();
        killed.cancel();
        let error = fetch_all(&items, &dest, &cache, &policy, None, budget, &killed)
            .await
            .unwrap_err();
        assert!(matches!(error.failure, FetchFailure::Cancelled), "{error}");

        // Opened as the task's user (another user than the agent's needs root, as in CI),
        // then the working directory is the task's.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        use std::os::unix::fs::MetadataExt;
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(allowed.join("data.txt"), Permissions::from_mode(0o644)).unwrap();
        let nobody = Some((65534, 65534));
        fetch_all(&items, &dest, &cache, &policy, nobody, budget, &cancel)
            .await
            .unwrap();
        assert_eq!(std::fs::read(dest.join("data.txt")).unwrap(), b"data\n");
        for path in [dest.clone(), dest.join("data.txt")] {
            let m = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", path.display());
        }
        // Readable by the task's user only: refused.
        std::fs::set_permissions(allowed.join("data.txt"), Permissions::from_mode(0o600)).unwrap();
        let second = root.path().join("second");
        std::fs::create_dir(&second).unwrap();
        let error = fetch_all(&items, &second, &cache, &policy, nobody, budget, &cancel)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("not readable by the task's user"), "{error}");
    }
}
