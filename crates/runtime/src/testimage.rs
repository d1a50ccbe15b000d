//! Builds small container images as `docker save` or OCI image-layout tarballs, for the unit
//! tests of the image store and for integration tests that need a real image without a
//! registry.
//!
//! Not a general image builder: one platform (this host's), layers held in memory (fine for a
//! 2 MB busybox, not for real images), fixed timestamps so the same inputs always give the same
//! digests. `LayerTar::raw` writes entries without any checks so tests can build hostile layers.

use crate::image::{normalize_reference, ImageConfig};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Modification time of every entry, so images are reproducible (2023-11-14T22:13:20Z).
pub const TEST_IMAGE_MTIME: u64 = 1_700_000_000;
const TEST_IMAGE_CREATED: &str = "2023-11-14T22:13:20Z";
/// The applets linked to /bin/busybox in the busybox image.
pub const BUSYBOX_APPLETS: [&str; 23] = [
    "sh", "sleep", "cat", "echo", "head", "dd", "ls", "env", "true", "false", "yes", "id",
    "hostname", "ps", "mkdir", "rm", "wc", "tail", "grep", "seq", "mknod", "wget", "chmod",
];
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestImageFormat {
    /// Classic `docker save`: manifest.json, `<hex>.json` config, plain `<id>/layer.tar`.
    DockerSave,
    /// OCI image layout: oci-layout, index.json, gzip'd layers under blobs/sha256.
    OciLayout,
}

/// An uncompressed layer tarball being built in memory.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        LayerTar::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(TEST_IMAGE_MTIME);
        header
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<&mut Self> {
        let mut header = LayerTar::header(tar::EntryType::Directory, mode, 0);
        self.builder.append_data(&mut header, path, io::empty())?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) -> io::Result<&mut Self> {
        self.file_owned(path, mode, 0, 0, contents)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        contents: &[u8],
    ) -> io::Result<&mut Self> {
        let mut header = LayerTar::header(tar::EntryType::Regular, mode, contents.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        self.builder.append_data(&mut header, path, contents)?;
        Ok(self)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut header = LayerTar::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder.append_link(&mut header, path, target)?;
        Ok(self)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut header = LayerTar::header(tar::EntryType::Link, 0o644, 0);
        self.builder.append_link(&mut header, path, target)?;
        Ok(self)
    }

    /// Appends an entry with `name` (and `link`) written verbatim, even if absolute or with
    /// `..`, which the tar crate's safe setters refuse. Names are limited to 100 bytes.
    pub fn raw(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        link: &[u8],
        contents: &[u8],
    ) -> io::Result<&mut Self> {
        let mode = if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        };
        let mut header = LayerTar::header(kind, mode, contents.len() as u64);
        let old = header.as_old_mut();
        if name.len() > old.name.len() || link.len() > old.linkname.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw names are limited to 100 bytes",
            ));
        }
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        self.builder.append(&header, contents)?;
        Ok(self)
    }

    /// The finished, uncompressed layer tarball.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.builder.into_inner()
    }
}

/// Builds the busybox layer: /bin/busybox with its applet symlinks, /etc/passwd and
/// /etc/group, /tmp (1777) and empty /proc, /sys, /dev, /root.
pub fn busybox_layer(busybox: &Path) -> io::Result<Vec<u8>> {
    let binary = std::fs::read(busybox).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "reading {} (install busybox-static): {e}",
                busybox.display()
            ),
        )
    })?;
    let mut layer = LayerTar::new();
    layer
        .dir("bin", 0o755)?
        .file("bin/busybox", 0o755, &binary)?;
    for applet in BUSYBOX_APPLETS {
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    layer
        .dir("etc", 0o755)?
        .file("etc/passwd", 0o644, PASSWD.as_bytes())?
        .file("etc/group", 0o644, GROUP.as_bytes())?
        .dir("tmp", 0o1777)?
        .dir("root", 0o700)?;
    for dir in ["proc", "sys", "dev"] {
        layer.dir(dir, 0o755)?;
    }
    layer.finish()
}

/// Builds a busybox image from a static busybox binary (Debian's busybox-static installs it at
/// /bin/busybox) and writes it to `out` as `reference` (e.g. `busybox:test`). The layer is
/// plain in `DockerSave` and gzip'd in `OciLayout`, so both import paths are exercised.
pub fn build_busybox_image(
    busybox: &Path,
    out: &Path,
    reference: &str,
    format: TestImageFormat,
) -> io::Result<()> {
    let config = ImageConfig {
        cmd: vec!["sh".to_string()],
        env: vec![DEFAULT_PATH.to_string()],
        ..ImageConfig::default()
    };
    write_image_archive(out, reference, &[busybox_layer(busybox)?], &config, format)
}

/// Writes an image made of `layers` (uncompressed tarballs, bottom first) with `config` to
/// `out`, tagged `reference`.
pub fn write_image_archive(
    out: &Path,
    reference: &str,
    layers: &[Vec<u8>],
    config: &ImageConfig,
    format: TestImageFormat,
) -> io::Result<()> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    let config_json = config_json(config, &diff_ids);
    let mut archive = tar::Builder::new(BufWriter::new(File::create(out)?));
    match format {
        TestImageFormat::DockerSave => {
            write_docker_save(&mut archive, reference, layers, &diff_ids, &config_json)?
        }
        TestImageFormat::OciLayout => {
            write_oci_layout(&mut archive, reference, layers, &config_json)?
        }
    }
    archive
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn config_json(config: &ImageConfig, diff_ids: &[String]) -> Vec<u8> {
    let mut container = serde_json::Map::new();
    if !config.entrypoint.is_empty() {
        container.insert("Entrypoint".into(), json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        container.insert("Cmd".into(), json!(config.cmd));
    }
    container.insert("Env".into(), json!(config.env));
    for (key, value) in [
        ("WorkingDir", &config.working_dir),
        ("User", &config.user),
        ("StopSignal", &config.stop_signal),
    ] {
        if let Some(value) = value {
            container.insert(key.into(), json!(value));
        }
    }
    let history: Vec<_> = diff_ids
        .iter()
        .map(|_| json!({"created": TEST_IMAGE_CREATED, "created_by": "dcos-rs testimage"}))
        .collect();
    let config = json!({
        "architecture": architecture(),
        "os": "linux",
        "created": TEST_IMAGE_CREATED,
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    serde_json::to_vec(&config).expect("json values serialize")
}

fn append_file<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    contents: &[u8],
) -> io::Result<()> {
    let mut header = LayerTar::header(tar::EntryType::Regular, 0o644, contents.len() as u64);
    archive.append_data(&mut header, path, contents)
}

fn append_dir<W: Write>(archive: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = LayerTar::header(tar::EntryType::Directory, 0o755, 0);
    archive.append_data(&mut header, path, io::empty())
}

fn write_docker_save<W: Write>(
    archive: &mut tar::Builder<W>,
    reference: &str,
    layers: &[Vec<u8>],
    diff_ids: &[String],
    config_json: &[u8],
) -> io::Result<()> {
    let config_name = format!("{}.json", sha256_hex(config_json));
    let mut layer_names = Vec::new();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        // docker derives a v1 layer id from the layer chain; any unique name will do here.
        let layer_id = sha256_hex(format!("{diff_id} {}", layer_names.len()).as_bytes());
        append_dir(archive, &layer_id)?;
        append_file(archive, &format!("{layer_id}/VERSION"), b"1.0")?;
        append_file(
            archive,
            &format!("{layer_id}/json"),
            format!("{{\"id\":\"{layer_id}\"}}").as_bytes(),
        )?;
        append_file(archive, &format!("{layer_id}/layer.tar"), layer)?;
        layer_names.push(format!("{layer_id}/layer.tar"));
    }
    append_file(archive, &config_name, config_json)?;
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": layer_names,
    }]);
    append_file(
        archive,
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json values serialize"),
    )
}

fn write_oci_layout<W: Write>(
    archive: &mut tar::Builder<W>,
    reference: &str,
    layers: &[Vec<u8>],
    config_json: &[u8],
) -> io::Result<()> {
    append_file(archive, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_dir(archive, "blobs")?;
    append_dir(archive, "blobs/sha256")?;
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        // mtime 0 and no file name in the gzip header keep the blob reproducible.
        let mut encoder: GzEncoder<Vec<u8>> = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::fast());
        encoder.write_all(layer)?;
        let compressed = encoder.finish()?;
        append_file(
            archive,
            &format!("blobs/sha256/{}", sha256_hex(&compressed)),
            &compressed,
        )?;
        layer_descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256_digest(&compressed),
            "size": compressed.len(),
        }));
    }
    append_file(
        archive,
        &format!("blobs/sha256/{}", sha256_hex(config_json)),
        config_json,
    )?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config_json),
            "size": config_json.len(),
        },
        "layers": layer_descriptors,
    }))
    .expect("json values serialize");
    append_file(
        archive,
        &format!("blobs/sha256/{}", sha256_hex(&manifest)),
        &manifest,
    )?;
    let full_name = normalize_reference(reference)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let tag = full_name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": full_name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    append_file(
        archive,
        "index.json",
        &serde_json::to_vec(&index).expect("json values serialize"),
    )
}

/// A loop device over a file of known bytes, detached when dropped: a block device the
/// tests may read (this machine refuses reads of its real disk to everyone, root included,
/// so a test of device isolation needs a disk nobody else refuses).
pub struct LoopDevice {
    pub path: std::path::PathBuf,
    pub major: u32,
    pub minor: u32,
    backing: std::path::PathBuf,
}

impl LoopDevice {
    /// Attaches `backing` (created with 64 KiB of 0x5a bytes) to a free loop device
    /// (`losetup`, util-linux).
    pub fn attach(backing: &Path) -> io::Result<LoopDevice> {
        std::fs::write(backing, vec![0x5au8; 64 * 1024])?;
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::metadata(&path)?;
        if !meta.file_type().is_block_device() {
            return Err(io::Error::other(format!(
                "{} is not a block device",
                path.display()
            )));
        }
        use std::os::unix::fs::MetadataExt;
        let rdev = meta.rdev();
        Ok(LoopDevice {
            path,
            major: libc::major(rdev),
            minor: libc::minor(rdev),
            backing: backing.to_path_buf(),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("--detach")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSYBOX: &str = "/bin/busybox";

    fn members(path: &Path) -> Vec<String> {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn busybox_image_is_reproducible_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for format in [TestImageFormat::DockerSave, TestImageFormat::OciLayout] {
            let first = dir.path().join("first.tar");
            let second = dir.path().join("second.tar");
            build_busybox_image(Path::new(BUSYBOX), &first, "busybox:test", format).unwrap();
            build_busybox_image(Path::new(BUSYBOX), &second, "busybox:test", format).unwrap();
            assert_eq!(
                std::fs::read(&first).unwrap(),
                std::fs::read(&second).unwrap(),
                "{format:?}"
            );
            let names = members(&first);
            match format {
                TestImageFormat::DockerSave => {
                    assert!(names.contains(&"manifest.json".to_string()))
                }
                TestImageFormat::OciLayout => {
                    assert!(names.contains(&"index.json".to_string()));
                    assert!(names.contains(&"oci-layout".to_string()));
                }
            }
        }
    }

    #[test]
    fn missing_busybox_is_reported_with_the_package_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let error = build_busybox_image(
            &dir.path().join("nope"),
            &dir.path().join("out.tar"),
            "busybox:test",
            TestImageFormat::DockerSave,
        )
        .unwrap_err();
        assert!(error.to_string().contains("busybox-static"), "{error}");
    }
}
