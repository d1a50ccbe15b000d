//! Tests of the image store through its public API, with archives built by `testimage`
//! (busybox for the happy paths, hand-made layers for whiteouts and hostile entries).

use super::*;
use crate::testimage::{build_busybox_image, write_image_archive, LayerTar, TestImageFormat};
use std::os::unix::fs::MetadataExt;
use tempfile::TempDir;

const BUSYBOX: &str = "/bin/busybox";
const LAYERS_IMAGE: &str = "test/layers:1";

struct Fixture {
    /// Keeps the temporary directory alive.
    _dir: TempDir,
    work: PathBuf,
    store_root: PathBuf,
    store: ImageStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let store_root = dir.path().join("store");
    let store = ImageStore::open(&store_root).unwrap();
    Fixture {
        work,
        store_root,
        store,
        _dir: dir,
    }
}

impl Fixture {
    fn busybox_archive(&self, reference: &str, format: TestImageFormat) -> PathBuf {
        let out = self.work.join(format!("busybox-{format:?}.tar"));
        build_busybox_image(Path::new(BUSYBOX), &out, reference, format)
            .expect("building the busybox test image (apt-get install busybox-static)");
        out
    }

    fn layers_archive(&self, layers: Vec<Vec<u8>>, format: TestImageFormat) -> PathBuf {
        let out = self.work.join(format!("layers-{format:?}.tar"));
        write_image_archive(&out, LAYERS_IMAGE, &layers, &ImageConfig::default(), format).unwrap();
        out
    }

    fn import_layers(&self, layers: Vec<Vec<u8>>) -> Result<Vec<ImageSummary>, ImageError> {
        self.store
            .import(&self.layers_archive(layers, TestImageFormat::DockerSave))
    }

    /// The merged view of an image's layers, copied out as a task without overlayfs gets it.
    fn merged(&self, reference: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let layers = self.store.resolve(reference).unwrap().layers;
        let dest = self.work.join(format!(
            "merged-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir(&dest).unwrap();
        layers::flatten_layers(&layers, &dest).unwrap();
        dest
    }

    /// `listing` of the overlay of `layers` (bottom first), mounted in a private mount
    /// namespace as a task's root is.
    fn overlay_listing(&self, layers: &[PathBuf]) -> String {
        let mountpoint = tempfile::tempdir_in(&self.work).unwrap();
        let lowerdir: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| l.display().to_string())
            .collect();
        let output = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t overlay overlay -o \"lowerdir=$1\" \"$2\" && cd \"$2\" && \
                 find . -mindepth 1 -printf '%P %y %m %U %G %s %l\\n' | sort",
            )
            .args([
                "sh",
                &lowerdir.join(":"),
                mountpoint.path().to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    fn dir_entries(&self, relative: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.store_root.join(relative))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The unpacked layers (named by chain id) in `layers/`.
    fn layer_dirs(&self) -> Vec<String> {
        let mut names = self.dir_entries(LAYERS_DIR);
        names.retain(|name| name != MOUNT_TARGETS_DIR);
        names
    }

    /// Nothing of any import is in the store: no reference, record, blob, tree or staging.
    fn assert_store_empty(&self) {
        assert!(self.store.list().unwrap().is_empty());
        assert!(
            self.dir_entries(BLOBS_DIR).is_empty(),
            "blobs left: {:?}",
            self.dir_entries(BLOBS_DIR)
        );
        assert!(
            self.layer_dirs().is_empty(),
            "layers left: {:?}",
            self.layer_dirs()
        );
        assert!(
            self.dir_entries(TMP_DIR).is_empty(),
            "staging left: {:?}",
            self.dir_entries(TMP_DIR)
        );
    }
}

fn layer(build: impl FnOnce(&mut LayerTar) -> io::Result<()>) -> Vec<u8> {
    let mut tar = LayerTar::new();
    build(&mut tar).unwrap();
    tar.finish().unwrap()
}

/// Copies the archive at `path` in place, letting `edit` change each member's contents.
fn rewrite_archive(path: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    let mut members = Vec::new();
    {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let mut contents = Vec::new();
            io::Read::read_to_end(&mut entry, &mut contents).unwrap();
            edit(&name, &mut contents);
            members.push((name, header, contents));
        }
    }
    let mut builder = tar::Builder::new(File::create(path).unwrap());
    for (name, mut header, contents) in members {
        header.set_size(contents.len() as u64);
        builder
            .append_data(&mut header, &name, contents.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap();
}

fn flip_first(haystack: &mut [u8], needle: &[u8]) {
    let at = haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present");
    haystack[at] ^= 0x20;
}

#[test]
fn docker_save_imports_and_resolves_by_short_full_and_digest_references() {
    let f = fixture();
    let imported = f
        .store
        .import(&f.busybox_archive("busybox:test", TestImageFormat::DockerSave))
        .unwrap();
    assert_eq!(imported.len(), 1);
    let summary = &imported[0];
    assert_eq!(summary.reference, "docker.io/library/busybox:test");
    assert_eq!(summary.layers, 1);
    assert!(
        summary.size_bytes > 1_000_000,
        "busybox is in the layer: {summary:?}"
    );
    assert_eq!(f.store.list().unwrap(), imported);

    for reference in [
        "busybox:test",
        "docker.io/library/busybox:test",
        "library/busybox:test",
    ] {
        let resolved = f.store.resolve(reference).unwrap();
        assert_eq!(resolved.digest, summary.digest, "{reference}");
        assert_eq!(resolved.reference, "docker.io/library/busybox:test");
        assert_eq!(resolved.config.cmd, ["sh"]);
        assert_eq!(
            resolved.config.env,
            ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        );
        assert_eq!(resolved.layers.len(), 1);
        assert!(resolved.layers[0].join("bin/busybox").is_file());
    }
    let by_digest = f.store.resolve(&summary.digest).unwrap();
    assert_eq!(by_digest.reference, summary.digest);
    let pinned = f
        .store
        .resolve(&format!("busybox@{}", summary.digest))
        .unwrap();
    assert_eq!(
        pinned.reference,
        format!("docker.io/library/busybox@{}", summary.digest)
    );
    assert_eq!(pinned.layers, by_digest.layers);
    assert!(matches!(
        f.store.resolve("busybox"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        f.store.resolve("other:test"),
        Err(ImageError::NotFound { .. })
    ));
    // What the master places by: a reference's presence key is among the store's keys
    // exactly when the store resolves it.
    let keys = f.store.presence_keys().unwrap();
    let pinned_reference = format!("busybox@{}", summary.digest);
    for reference in [
        "busybox:test",
        "library/busybox:test",
        summary.digest.as_str(),
        pinned_reference.as_str(),
        "busybox",
        "other:test",
    ] {
        let key = super::presence_key(reference).unwrap();
        assert_eq!(
            keys.contains(&key),
            f.store.resolve(reference).is_ok(),
            "{reference} as {key} in {keys:?}"
        );
    }
}

#[test]
fn oci_layout_with_gzip_layer_imports_and_resolves_by_manifest_digest() {
    let f = fixture();
    let archive = f.busybox_archive("busybox", TestImageFormat::OciLayout);
    let imported = f.store.import(&archive).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, "docker.io/library/busybox:latest");
    let resolved = f.store.resolve("busybox").unwrap();
    assert_eq!(resolved.digest, imported[0].digest);
    assert!(resolved.layers[0].join("bin/busybox").is_file());

    let index: Index =
        serde_json::from_slice(&fs::read(f.store_root.join(INDEX_FILE)).unwrap()).unwrap();
    let manifest = index
        .images
        .values()
        .next()
        .unwrap()
        .manifest_digest
        .clone()
        .unwrap();
    assert_eq!(
        f.store.resolve(&manifest.to_string()).unwrap().digest,
        imported[0].digest
    );
    // The layer blob is stored compressed, under the digest of the compressed bytes.
    let layer = &index.images.values().next().unwrap().layers[0];
    assert_ne!(layer.digest, layer.diff_id);
    assert!(f
        .store_root
        .join(BLOBS_DIR)
        .join(layer.digest.hex())
        .is_file());
}

#[test]
fn both_formats_of_the_same_image_give_the_same_config_digest() {
    let f = fixture();
    let docker = f
        .store
        .import(&f.busybox_archive("busybox:a", TestImageFormat::DockerSave))
        .unwrap();
    let oci = f
        .store
        .import(&f.busybox_archive("busybox:b", TestImageFormat::OciLayout))
        .unwrap();
    assert_eq!(docker[0].digest, oci[0].digest);
    assert_eq!(f.layer_dirs().len(), 1, "one layer for one image");
}

#[test]
fn rootfs_keeps_busybox_executable_with_modes_links_and_mtimes() {
    let f = fixture();
    f.store
        .import(&f.busybox_archive("busybox:test", TestImageFormat::DockerSave))
        .unwrap();
    let rootfs = f.merged("busybox:test");
    let busybox = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(busybox.mode() & 0o7777, 0o755);
    assert_eq!(busybox.len(), fs::metadata(BUSYBOX).unwrap().len());
    assert_eq!(busybox.mtime(), crate::testimage::TEST_IMAGE_MTIME as i64);
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(rootfs.join("root")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        fs::metadata(rootfs.join("bin")).unwrap().mtime(),
        crate::testimage::TEST_IMAGE_MTIME as i64
    );
    assert!(fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
    let output = std::process::Command::new(rootfs.join("bin/busybox"))
        .args(["echo", "hello"])
        .output()
        .unwrap();
    assert_eq!(output.stdout, b"hello\n");
}

#[test]
fn owners_and_special_mode_bits_are_kept() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: giving files away needs root");
        return;
    }
    let f = fixture();
    f.import_layers(vec![layer(|l| {
        l.file_owned("usr/bin/su", 0o4755, 0, 0, b"x")?;
        l.file_owned("home/app/data", 0o640, 1000, 2000, b"y")?;
        Ok(())
    })])
    .unwrap();
    let rootfs = f.merged(LAYERS_IMAGE);
    assert_eq!(
        fs::metadata(rootfs.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    let data = fs::metadata(rootfs.join("home/app/data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (1000, 2000, 0o640)
    );
    // Directories the layer implies without listing them get docker's default.
    assert_eq!(
        fs::metadata(rootfs.join("home/app")).unwrap().mode() & 0o7777,
        0o755
    );
}

#[test]
fn whiteouts_hide_lower_files_and_opaque_directories_hide_only_lower_contents() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: whiteouts and opaque markers need root");
        return;
    }
    let f = fixture();
    // Hostile targets always point into the test's own directory: if the code under test
    // regresses, the damage stays there.
    let victim_dir = f.work.join("victim");
    fs::create_dir(&victim_dir).unwrap();
    fs::write(victim_dir.join("passwd"), b"victim").unwrap();
    let lower = layer(|l| {
        l.file("a/keep", 0o644, b"keep")?;
        l.file("a/gone", 0o644, b"gone")?;
        l.file("b/old1", 0o644, b"old")?;
        l.file("b/sub/old2", 0o644, b"old")?;
        l.file("c/dir/deep", 0o644, b"deep")?;
        l.symlink("d", victim_dir.to_str().unwrap())?;
        Ok(())
    });
    let upper = layer(|l| {
        l.file("a/.wh.gone", 0o644, b"")?;
        // The opaque marker comes after this layer's own file: it must survive anyway.
        l.file("b/new", 0o644, b"new")?;
        l.file("b/.wh..wh..opq", 0o644, b"")?;
        // A whiteout below a symlink hides nothing, and must not follow it.
        l.file("d/.wh.passwd", 0o644, b"")?;
        l.file(".wh.c", 0o644, b"")?;
        l.file(".wh.d", 0o644, b"")?;
        l.file("a/.wh.never-existed", 0o644, b"")?;
        Ok(())
    });
    f.import_layers(vec![lower, upper]).unwrap();
    let rootfs = f.merged(LAYERS_IMAGE);
    let exists = |p: &str| rootfs.join(p).symlink_metadata().is_ok();
    assert!(exists("a/keep"));
    assert!(!exists("a/gone"));
    assert!(!exists("a/.wh.gone"), "whiteouts are not written");
    assert!(exists("b/new"));
    assert!(!exists("b/old1"));
    assert!(!exists("b/sub"));
    assert!(!exists("b/.wh..wh..opq"));
    assert!(!exists("c"));
    assert!(!exists("d"));
    assert!(
        victim_dir.join("passwd").exists(),
        "the whiteout did not follow the symlink"
    );
}

#[test]
fn a_directory_replaces_a_lower_symlink_and_a_file_replaces_a_lower_directory() {
    let f = fixture();
    let outside = f.work.join("outside");
    fs::create_dir(&outside).unwrap();
    let lower = layer(|l| {
        l.symlink("lib", outside.to_str().unwrap())?;
        l.file("x/y", 0o644, b"y")?;
        Ok(())
    });
    let upper = layer(|l| {
        l.dir("lib", 0o755)?;
        l.file("lib/libc.so", 0o644, b"libc")?;
        l.file("x", 0o644, b"now a file")?;
        Ok(())
    });
    f.import_layers(vec![lower, upper]).unwrap();
    let rootfs = f.merged(LAYERS_IMAGE);
    assert!(rootfs.join("lib").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs::read(rootfs.join("lib/libc.so")).unwrap(), b"libc");
    assert_eq!(fs::read(rootfs.join("x")).unwrap(), b"now a file");
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written outside"
    );
}

#[test]
fn parent_directory_entry_is_refused_and_nothing_is_left() {
    let f = fixture();
    let hostile = layer(|l| {
        l.file("ok", 0o644, b"ok")?;
        l.raw(tar::EntryType::Regular, b"a/../../escaped", b"", b"x")?;
        Ok(())
    });
    let error = f.import_layers(vec![hostile]).unwrap_err();
    assert!(
        matches!(&error, ImageError::PathEscape { path } if path == "a/../../escaped"),
        "{error}"
    );
    f.assert_store_empty();
}

#[test]
fn absolute_entry_is_refused_and_nothing_is_left() {
    let f = fixture();
    let target = f.work.join("absolute-target");
    let hostile = layer(|l| {
        l.raw(
            tar::EntryType::Regular,
            target.to_str().unwrap().as_bytes(),
            b"",
            b"x",
        )?;
        Ok(())
    });
    let error = f.import_layers(vec![hostile]).unwrap_err();
    assert!(matches!(error, ImageError::PathEscape { .. }), "{error}");
    assert!(!target.exists());
    f.assert_store_empty();
}

#[test]
fn writing_through_a_symlink_is_refused_within_and_across_layers() {
    let f = fixture();
    let outside = f.work.join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_str = outside.to_str().unwrap().to_string();

    let same_layer = layer(|l| {
        l.symlink("evil", &outside_str)?;
        l.file("evil/owned", 0o644, b"x")?;
        Ok(())
    });
    let error = f.import_layers(vec![same_layer]).unwrap_err();
    assert!(
        matches!(&error, ImageError::PathEscape { path } if path == "evil/owned"),
        "{error}"
    );

    // A layer is unpacked into its own directory, so a lower layer's symlink is never on
    // the way: the upper directory replaces it (as overlayfs shows it).
    let lower = layer(|l| l.symlink("evil", &outside_str).map(drop));
    let upper = layer(|l| l.dir("evil/sub", 0o755).map(drop));
    f.import_layers(vec![lower, upper]).unwrap();
    assert!(f.merged(LAYERS_IMAGE).join("evil/sub").is_dir());
    f.store.remove(LAYERS_IMAGE).unwrap();

    // A relative symlink climbing out of the tree is no different. A layer is unpacked in
    // <tempdir>/store/tmp/import-*/layer-*, so four levels up is <tempdir>.
    let relative = layer(|l| {
        l.symlink("up", "../../../../work/outside")?;
        l.file("up/owned", 0o644, b"x")?;
        Ok(())
    });
    let error = f.import_layers(vec![relative]).unwrap_err();
    assert!(matches!(error, ImageError::PathEscape { .. }), "{error}");

    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written outside"
    );
    f.assert_store_empty();
}

#[test]
fn a_file_entry_replaces_a_symlink_instead_of_writing_through_it() {
    let f = fixture();
    let victim = f.work.join("victim");
    fs::write(&victim, b"original").unwrap();
    let lower = layer(|l| l.symlink("etc/shadow", victim.to_str().unwrap()).map(drop));
    let upper = layer(|l| l.file("etc/shadow", 0o600, b"image's own").map(drop));
    f.import_layers(vec![lower, upper]).unwrap();
    let rootfs = f.merged(LAYERS_IMAGE);
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_eq!(fs::read(rootfs.join("etc/shadow")).unwrap(), b"image's own");
}

#[test]
fn hard_links_must_stay_inside_the_tree() {
    let f = fixture();
    let good = layer(|l| {
        l.file("bin/tool", 0o755, b"tool")?;
        l.hardlink("bin/alias", "bin/tool")?;
        Ok(())
    });
    f.import_layers(vec![good]).unwrap();
    let rootfs = f.merged(LAYERS_IMAGE);
    assert_eq!(
        fs::metadata(rootfs.join("bin/tool")).unwrap().ino(),
        fs::metadata(rootfs.join("bin/alias")).unwrap().ino()
    );
    f.store.remove(LAYERS_IMAGE).unwrap();

    // As with docker's overlay2 driver, a link into a lower layer is refused.
    let lower = layer(|l| l.file("bin/tool", 0o755, b"tool").map(drop));
    let upper = layer(|l| l.hardlink("bin/alias", "bin/tool").map(drop));
    let error = f.import_layers(vec![lower, upper]).unwrap_err();
    assert!(error.to_string().contains("not in this layer"), "{error}");

    let outside = f.work.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let absolute_secret = outside.join("secret");
    let hostile_layers = [
        layer(|l| {
            l.raw(
                tar::EntryType::Link,
                b"stolen",
                b"../../../../work/outside/secret",
                b"",
            )
            .map(drop)
        }),
        layer(|l| {
            l.raw(
                tar::EntryType::Link,
                b"stolen",
                absolute_secret.to_str().unwrap().as_bytes(),
                b"",
            )
            .map(drop)
        }),
        layer(|l| {
            l.symlink("out", outside.to_str().unwrap())?;
            l.hardlink("stolen", "out/secret")?;
            Ok(())
        }),
    ];
    for hostile in hostile_layers {
        let error = f.import_layers(vec![hostile]).unwrap_err();
        assert!(matches!(error, ImageError::PathEscape { .. }), "{error}");
    }
    f.assert_store_empty();
}

#[test]
fn corrupted_oci_blob_is_a_digest_mismatch_and_leaves_the_store_as_it_was() {
    let f = fixture();
    f.store
        .import(&f.busybox_archive("busybox:good", TestImageFormat::DockerSave))
        .unwrap();
    let blobs_before = f.dir_entries(BLOBS_DIR);
    let layers_before = f.layer_dirs();

    let archive = f.layers_archive(
        vec![layer(|l| l.file("data", 0o644, &[7u8; 4096]).map(drop))],
        TestImageFormat::OciLayout,
    );
    // The layer blob is the largest member; change its last byte.
    rewrite_archive(&archive, |name, contents| {
        if name.starts_with("blobs/sha256/")
            && contents.len() > 100
            && contents.starts_with(&[0x1f, 0x8b])
        {
            *contents.last_mut().unwrap() ^= 1;
        }
    });
    let error = f.store.import(&archive).unwrap_err();
    assert!(
        matches!(error, ImageError::DigestMismatch { .. }),
        "{error}"
    );
    assert_eq!(f.dir_entries(BLOBS_DIR), blobs_before);
    assert_eq!(f.layer_dirs(), layers_before);
    assert!(f.dir_entries(TMP_DIR).is_empty());
    assert_eq!(f.store.list().unwrap().len(), 1);
    assert!(matches!(
        f.store.resolve(LAYERS_IMAGE),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn corrupted_docker_save_layer_fails_its_diff_id_and_nothing_is_left() {
    let f = fixture();
    let archive = f.busybox_archive("busybox:test", TestImageFormat::DockerSave);
    rewrite_archive(&archive, |name, contents| {
        if name.ends_with("/layer.tar") {
            flip_first(contents, b"nogroup");
        }
    });
    let error = f.store.import(&archive).unwrap_err();
    assert!(
        matches!(&error, ImageError::DigestMismatch { expected, .. } if expected.starts_with("sha256:")),
        "{error}"
    );
    f.assert_store_empty();
}

#[test]
fn remove_untags_and_deletes_the_image_with_its_last_tag() {
    let f = fixture();
    let archive = f.busybox_archive("busybox:one", TestImageFormat::DockerSave);
    f.store.import(&archive).unwrap();
    let oci = f.busybox_archive("busybox:two", TestImageFormat::OciLayout);
    f.store.import(&oci).unwrap();
    let layer = f.store.resolve("busybox:one").unwrap().layers[0].clone();

    f.store.remove("busybox:one").unwrap();
    assert!(matches!(
        f.store.resolve("busybox:one"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(layer.is_dir(), "still tagged busybox:two");
    assert_eq!(f.store.list().unwrap().len(), 1);

    f.store.remove("docker.io/library/busybox:two").unwrap();
    assert!(!layer.exists());
    assert!(matches!(
        f.store.remove("busybox:two"),
        Err(ImageError::NotFound { .. })
    ));
    f.assert_store_empty();
}

#[test]
fn remove_by_digest_removes_every_tag() {
    let f = fixture();
    let imported = f
        .store
        .import(&f.busybox_archive("busybox:one", TestImageFormat::DockerSave))
        .unwrap();
    f.store
        .import(&f.busybox_archive("busybox:two", TestImageFormat::OciLayout))
        .unwrap();
    f.store.remove(&imported[0].digest).unwrap();
    f.assert_store_empty();
}

#[test]
fn reimport_is_idempotent_and_does_not_unpack_again() {
    let f = fixture();
    let archive = f.busybox_archive("busybox:test", TestImageFormat::DockerSave);
    let first = f.store.import(&archive).unwrap();
    let layer = f.store.resolve("busybox:test").unwrap().layers[0].clone();
    let marker = layer.join("unpacked-once");
    fs::write(&marker, b"").unwrap();
    let blobs = f.dir_entries(BLOBS_DIR);

    let second = f.store.import(&archive).unwrap();
    assert_eq!(first, second, "same summaries, same import time");
    assert!(marker.exists(), "the layer was reused");
    assert_eq!(f.store.list().unwrap(), first);
    assert_eq!(f.dir_entries(BLOBS_DIR), blobs);
    assert!(f.dir_entries(TMP_DIR).is_empty());
}

#[test]
fn retagging_keeps_the_previous_image_untagged_until_removed() {
    let f = fixture();
    let old = f
        .store
        .import(&f.busybox_archive("app:1", TestImageFormat::DockerSave))
        .unwrap();
    let layers = vec![layer(|l| l.file("v2", 0o644, b"2").map(drop))];
    let out = f.work.join("app2.tar");
    write_image_archive(
        &out,
        "app:1",
        &layers,
        &ImageConfig::default(),
        TestImageFormat::DockerSave,
    )
    .unwrap();
    let new = f.store.import(&out).unwrap();
    assert_ne!(old[0].digest, new[0].digest);
    assert_eq!(f.store.resolve("app:1").unwrap().digest, new[0].digest);
    let listed: Vec<String> = f
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    assert_eq!(
        listed,
        ["docker.io/library/app:1".to_string(), old[0].digest.clone()]
    );
    assert!(f.store.resolve(&old[0].digest).unwrap().layers[0].is_dir());
    f.store.remove(&old[0].digest).unwrap();
    assert_eq!(f.layer_dirs().len(), 1);
}

#[test]
fn gzipped_archive_imports() {
    let f = fixture();
    let plain = f.busybox_archive("busybox:gz", TestImageFormat::DockerSave);
    let gzipped = f.work.join("busybox.tar.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(File::create(&gzipped).unwrap(), flate2::Compression::fast());
    io::copy(&mut File::open(&plain).unwrap(), &mut encoder).unwrap();
    encoder.finish().unwrap();
    let imported = f.store.import(&gzipped).unwrap();
    assert_eq!(imported[0].reference, "docker.io/library/busybox:gz");
}

#[test]
fn reopening_keeps_images_and_drops_leftovers() {
    let f = fixture();
    let imported = f
        .store
        .import(&f.busybox_archive("busybox:test", TestImageFormat::OciLayout))
        .unwrap();
    // What a crash between steps could leave: staging, an unnamed blob, an unnamed tree.
    fs::create_dir_all(f.store_root.join(TMP_DIR).join("import-1-1/members")).unwrap();
    fs::write(
        f.store_root.join(BLOBS_DIR).join("ab".repeat(32)),
        b"orphan",
    )
    .unwrap();
    fs::create_dir_all(
        f.store_root
            .join(LAYERS_DIR)
            .join("cd".repeat(32))
            .join("bin"),
    )
    .unwrap();

    let reopened = ImageStore::open(&f.store_root).unwrap();
    assert_eq!(reopened.list().unwrap(), imported);
    assert!(reopened.resolve("busybox:test").unwrap().layers[0]
        .join("bin/busybox")
        .is_file());
    assert!(f.dir_entries(TMP_DIR).is_empty());
    assert!(!f.dir_entries(BLOBS_DIR).contains(&"ab".repeat(32)));
    assert_eq!(f.layer_dirs().len(), 1);
    assert_eq!(
        fs::metadata(f.store_root.join(LAYERS_DIR)).unwrap().mode() & 0o777,
        0o700
    );
}

#[test]
fn archives_without_an_image_are_invalid() {
    let f = fixture();
    let empty = f.work.join("empty.tar");
    let mut builder = tar::Builder::new(File::create(&empty).unwrap());
    builder.finish().unwrap();
    drop(builder);
    assert!(matches!(
        f.store.import(&empty),
        Err(ImageError::InvalidArchive(_))
    ));
    let garbage = f.work.join("garbage.tar");
    fs::write(&garbage, vec![0xffu8; 2048]).unwrap();
    assert!(matches!(
        f.store.import(&garbage),
        Err(ImageError::InvalidArchive(_))
    ));
    f.assert_store_empty();
}

#[test]
fn error_messages_are_lowercase_without_final_period() {
    let errors = [
        ImageError::NotFound {
            reference: "busybox".into(),
        },
        ImageError::InvalidArchive("x".into()),
        ImageError::DigestMismatch {
            expected: "sha256:a".into(),
            actual: "sha256:b".into(),
        },
        ImageError::PathEscape {
            path: "../x".into(),
        },
        ImageError::TooLarge {
            what: "manifest.json".into(),
            limit_bytes: 1,
        },
        ImageError::StoreCorrupt("x".into()),
        ImageError::SizeMismatch {
            digest: "sha256:a".into(),
            expected_bytes: 1,
            actual_bytes: 2,
        },
        ImageError::InvalidManifest("x".into()),
    ];
    for error in errors {
        let message = error.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
}

/// Unpacks an OCI layout tarball into a directory, as `skopeo copy oci:dir` leaves one.
fn unpack_layout(archive: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    tar::Archive::new(File::open(archive).unwrap())
        .unpack(dir)
        .unwrap();
}

fn layout_blobs(dir: &Path) -> Vec<PathBuf> {
    let mut blobs: Vec<PathBuf> = fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort();
    blobs
}

#[test]
fn oci_layout_directory_imports_and_is_left_as_it_was() {
    let f = fixture();
    let layout = f.work.join("layout");
    unpack_layout(
        &f.busybox_archive("busybox:dir", TestImageFormat::OciLayout),
        &layout,
    );
    let before = layout_blobs(&layout);
    let imported = f.store.import_layout_dir(&layout).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, "docker.io/library/busybox:dir");
    assert!(f.merged("busybox:dir").join("bin/busybox").is_file());
    assert_eq!(
        layout_blobs(&layout),
        before,
        "the source directory is copied, not moved"
    );
    assert!(f.dir_entries(TMP_DIR).is_empty());
}

#[test]
fn corrupted_blob_in_a_layout_directory_is_refused_and_nothing_is_left() {
    let f = fixture();
    let layout = f.work.join("layout");
    unpack_layout(
        &f.busybox_archive("busybox:dir", TestImageFormat::OciLayout),
        &layout,
    );
    // The largest blob is the gzip'd layer.
    let layer = layout_blobs(&layout)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&layer, bytes).unwrap();
    let error = f.store.import_layout_dir(&layout).unwrap_err();
    let hex = layer.file_name().unwrap().to_str().unwrap();
    assert!(
        matches!(&error, ImageError::DigestMismatch { expected, .. } if expected.ends_with(hex)),
        "{error}"
    );
    f.assert_store_empty();
    let missing = f.work.join("not-a-layout");
    fs::create_dir(&missing).unwrap();
    assert!(matches!(
        f.store.import_layout_dir(&missing),
        Err(ImageError::InvalidArchive(_))
    ));
}

/// What a registry pull of a multi-platform tag writes: an index (with an entry for another
/// architecture that was never downloaded) above the manifest, in a store staging directory.
#[test]
fn staged_layout_behind_an_index_is_moved_in_and_resolves_by_index_digest() {
    let f = fixture();
    let unpacked = f.work.join("unpacked");
    unpack_layout(
        &f.busybox_archive("busybox", TestImageFormat::OciLayout),
        &unpacked,
    );
    let top: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let manifest = &top["manifests"][0];
    let staging = f.store.staging_dir("pull").unwrap();
    let staging_path = staging.path().to_path_buf();
    registry::prepare_layout(&staging_path).unwrap();
    for blob in layout_blobs(&unpacked) {
        fs::copy(
            &blob,
            staging_path
                .join("blobs/sha256")
                .join(blob.file_name().unwrap()),
        )
        .unwrap();
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "0".repeat(64)), "size": 7,
             "platform": {"os": "linux", "architecture": "not-this-host"}},
            {"mediaType": manifest["mediaType"], "digest": manifest["digest"], "size": manifest["size"],
             "platform": {"os": "linux", "architecture": registry::host_architecture()}},
        ],
    }))
    .unwrap();
    let index_digest = Digest::of_bytes(&index);
    fs::write(
        registry::layout_blob_path(&staging_path, &index_digest),
        &index,
    )
    .unwrap();
    let top = registry::BlobDescriptor {
        media_type: Some("application/vnd.oci.image.index.v1+json".into()),
        digest: index_digest.clone(),
        size_bytes: index.len() as u64,
    };
    registry::write_layout_index(&staging_path, &top, Some("registry.test/team/box:v1")).unwrap();

    let imported = f.store.import_staged_layout(staging).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference, "registry.test/team/box:v1");
    assert!(!staging_path.exists(), "the staging directory is gone");
    assert!(f.dir_entries(TMP_DIR).is_empty());
    for reference in [
        "registry.test/team/box:v1".to_string(),
        format!("registry.test/team/box@{index_digest}"),
        format!(
            "registry.test/team/box@{}",
            manifest["digest"].as_str().unwrap()
        ),
    ] {
        assert_eq!(
            f.store.resolve(&reference).unwrap().digest,
            imported[0].digest,
            "{reference}"
        );
    }
    // The index is an alias, not a blob kept in the store.
    assert!(!f
        .store_root
        .join(BLOBS_DIR)
        .join(index_digest.hex())
        .exists());
}

#[test]
fn a_dropped_staging_directory_is_removed() {
    let f = fixture();
    let staging = f.store.staging_dir("pull").unwrap();
    fs::write(staging.path().join("partial"), b"half a layer").unwrap();
    drop(staging);
    assert!(f.dir_entries(TMP_DIR).is_empty());
}

/// `find`'s view of a tree: path, type, mode, owner, group and size of each entry, sorted.
fn listing(dir: &Path) -> String {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -mindepth 1 -printf '%P %y %m %U %G %s %l\\n' | sort")
        .arg("sh")
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn images_on_the_same_base_share_its_layer_directories() {
    let f = fixture();
    let base = layer(|l| l.file("etc/os-release", 0o644, b"base").map(drop));
    let one = layer(|l| l.file("app/one", 0o644, b"1").map(drop));
    let two = layer(|l| l.file("app/two", 0o644, b"2").map(drop));
    let import = |name: &str, layers: Vec<Vec<u8>>| {
        let out = f.work.join(format!("{name}.tar"));
        let reference = format!("test/{name}:1");
        write_image_archive(
            &out,
            &reference,
            &layers,
            &ImageConfig::default(),
            TestImageFormat::DockerSave,
        )
        .unwrap();
        f.store.import(&out).unwrap();
        f.store.resolve(&reference).unwrap()
    };
    let first = import("one", vec![base.clone(), one]);
    let second = import("two", vec![base, two.clone()]);
    assert_eq!(first.layers[0], second.layers[0], "the base is shared");
    assert_ne!(first.layers[1], second.layers[1]);
    assert_eq!(f.layer_dirs().len(), 3);
    // The same layer on another base is another directory: it is unpacked over its base.
    let alone = import("alone", vec![two]);
    assert_ne!(alone.layers[0], second.layers[1]);
    assert_eq!(f.layer_dirs().len(), 4);
    assert_eq!(
        fs::read(f.merged("test/two:1").join("etc/os-release")).unwrap(),
        b"base"
    );

    f.store.remove("test/one:1").unwrap();
    assert!(second.layers[0].is_dir(), "still used by test/two");
    assert!(!first.layers[1].exists());
    f.store.remove("test/two:1").unwrap();
    f.store.remove("test/alone:1").unwrap();
    f.assert_store_empty();
}

#[test]
fn layers_are_in_overlayfs_format_and_a_mounted_overlay_shows_what_the_copy_shows() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: whiteouts and overlay mounts need root");
        return;
    }
    let f = fixture();
    let lower = layer(|l| {
        l.dir("tmp", 0o1777)?;
        l.file("a/keep", 0o644, b"keep")?;
        l.file("a/gone", 0o644, b"gone")?;
        l.file("b/old", 0o644, b"old")?;
        l.file("c/deep/x", 0o644, b"x")?;
        l.file("r/old", 0o644, b"old")?;
        l.symlink("s", "a")?;
        Ok(())
    });
    let upper = layer(|l| {
        // `tmp` and `a` are implied, not listed: they keep their lower mode.
        l.file("tmp/new", 0o600, b"new")?;
        l.file("a/.wh.gone", 0o644, b"")?;
        l.file("b/new", 0o644, b"new")?;
        l.file("b/.wh..wh..opq", 0o644, b"")?;
        l.file(".wh.c", 0o644, b"")?;
        // Replaced by a directory of this layer: nothing of the lower one shows.
        l.file(".wh.r", 0o644, b"")?;
        l.file("r/new", 0o644, b"new")?;
        l.file("s/through-symlink", 0o644, b"")?;
        Ok(())
    });
    f.import_layers(vec![lower, upper]).unwrap();
    let layers = f.store.resolve(LAYERS_IMAGE).unwrap().layers;

    // What overlayfs itself would have written to an upper layer.
    let top = &layers[1];
    let gone = fs::symlink_metadata(top.join("a/gone")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&gone.file_type()) && gone.rdev() == 0,
        "a whiteout is a 0/0 character device"
    );
    assert!(fs::symlink_metadata(top.join("c")).is_ok());
    let opaque = |dir: &str| {
        let fd = File::open(top.join(dir)).unwrap();
        unpack::is_opaque(&std::os::fd::OwnedFd::from(fd))
    };
    assert!(opaque("b") && opaque("r") && !opaque("a"));
    assert_eq!(
        fs::metadata(top.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );

    let copy = f.merged(LAYERS_IMAGE);
    let expected = listing(&copy);
    for line in [
        "a/keep f 644",
        "b/new f 644",
        "r/new f 644",
        "tmp d 1777",
        "tmp/new f 600",
    ] {
        assert!(expected.contains(line), "{line} in {expected}");
    }
    for absent in ["a/gone", "b/old", "c/deep", "r/old"] {
        assert!(!expected.contains(absent), "{absent} in {expected}");
    }

    assert_eq!(f.overlay_listing(&layers), expected);
}

#[test]
fn whiteouts_covering_each_other_and_a_top_level_opaque_marker_look_the_same_mounted() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: whiteouts and overlay mounts need root");
        return;
    }
    let f = fixture();
    let lower = layer(|l| {
        l.file("a/b/c", 0o644, b"c")?;
        l.dir("foo", 0o700)?;
        l.file("foo/old", 0o644, b"old")?;
        l.file("top/x", 0o644, b"x")?;
        l.file("plain", 0o644, b"p")?;
        Ok(())
    });
    let middle = layer(|l| {
        // A whiteout below one of the same layer's comes first in the archive.
        l.file("a/b/.wh.c", 0o644, b"")?;
        l.file(".wh.a", 0o644, b"")?;
        // Replaced by an implied directory: it must not take the removed one's mode.
        l.file(".wh.foo", 0o644, b"")?;
        l.file("foo/bar", 0o644, b"bar")?;
        Ok(())
    });
    f.import_layers(vec![lower.clone(), middle.clone()])
        .unwrap();
    let layers = f.store.resolve(LAYERS_IMAGE).unwrap().layers;
    let expected = listing(&f.merged(LAYERS_IMAGE));
    assert!(
        !expected.contains("a/b") && !expected.starts_with("a "),
        "{expected}"
    );
    assert!(expected.contains("foo d 755 0 0"), "{expected}");
    assert!(!expected.contains("foo/old"), "{expected}");
    assert_eq!(f.overlay_listing(&layers), expected);
    f.store.remove(LAYERS_IMAGE).unwrap();

    let top = layer(|l| {
        l.file(".wh..wh..opq", 0o644, b"")?;
        l.file("top/y", 0o644, b"y")?;
        Ok(())
    });
    f.import_layers(vec![lower, middle, top]).unwrap();
    let layers = f.store.resolve(LAYERS_IMAGE).unwrap().layers;
    let expected = listing(&f.merged(LAYERS_IMAGE));
    assert_eq!(expected, "top d 755 0 0 4096 \ntop/y f 644 0 0 1 \n");
    assert_eq!(f.overlay_listing(&layers), expected);
}

#[test]
fn a_store_of_whole_image_trees_gets_layer_directories_and_drops_the_unused_trees() {
    let f = fixture();
    let imported = f
        .store
        .import(&f.busybox_archive("busybox:old", TestImageFormat::DockerSave))
        .unwrap();
    let digest = imported[0].digest.clone();
    // What an older build left: a whole-image tree, and no layer directories.
    for entry in fs::read_dir(f.store_root.join(LAYERS_DIR)).unwrap() {
        fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let tree = f
        .store_root
        .join(ROOTFS_DIR)
        .join(digest.strip_prefix("sha256:").unwrap());
    fs::create_dir_all(tree.join("bin")).unwrap();
    assert_eq!(
        f.store.resolve("busybox:old").unwrap().layers,
        vec![tree.clone()],
        "until it has layers, the image runs from its tree"
    );
    let index_path = f.store_root.join(INDEX_FILE);
    let index = fs::read_to_string(&index_path).unwrap();
    assert!(index.contains("\"version\": 2"), "{index}");
    fs::write(
        &index_path,
        index.replace("\"version\": 2", "\"version\": 1"),
    )
    .unwrap();

    let reopened = ImageStore::open(&f.store_root).unwrap();
    assert!(
        fs::read_to_string(&index_path)
            .unwrap()
            .contains("\"version\": 2"),
        "older builds now refuse the store"
    );
    assert_eq!(reopened.list().unwrap(), imported);
    let resolved = reopened.resolve("busybox:old").unwrap();
    assert!(resolved.layers[0].join("bin/busybox").is_file());
    assert!(f.dir_entries(TMP_DIR).is_empty());

    let in_use = BTreeSet::from([digest.clone()]);
    assert_eq!(reopened.remove_flat_trees(&in_use).unwrap(), 0);
    assert!(tree.is_dir(), "a task still runs from it");
    assert_eq!(reopened.remove_flat_trees(&BTreeSet::new()).unwrap(), 1);
    assert!(!tree.exists());
    assert!(!f.store_root.join(ROOTFS_DIR).exists());

    // An image whose layers cannot be unpacked (here: a damaged blob) keeps running from its
    // tree, and the store still opens.
    let layer_dir = resolved.layers[0].clone();
    fs::remove_dir_all(&layer_dir).unwrap();
    fs::create_dir_all(tree.join("bin")).unwrap();
    let blobs = f.dir_entries(BLOBS_DIR);
    for blob in &blobs {
        let path = f.store_root.join(BLOBS_DIR).join(blob);
        if fs::metadata(&path).unwrap().len() > 100_000 {
            fs::write(&path, b"damaged").unwrap();
        }
    }
    let reopened = ImageStore::open(&f.store_root).unwrap();
    assert_eq!(
        reopened.resolve("busybox:old").unwrap().layers,
        vec![tree.clone()]
    );
    assert!(!layer_dir.exists());
    assert_eq!(reopened.remove_flat_trees(&BTreeSet::new()).unwrap(), 0);
    assert!(tree.is_dir(), "the image still runs from it");
}

#[test]
fn a_layer_claiming_an_unpacked_layers_diff_id_is_still_checked_against_it() {
    let f = fixture();
    let private = layer(|l| l.file("secret", 0o600, b"private").map(drop));
    let other = layer(|l| l.file("mine", 0o644, b"mine").map(drop));
    let private_id = Digest::of_bytes(&private).to_string();
    let other_id = Digest::of_bytes(&other).to_string();
    f.import_layers(vec![private]).unwrap();

    // An image whose config names the unpacked layer's diff_id, with a blob of its own.
    let out = f.work.join("claim.tar");
    write_image_archive(
        &out,
        "test/claim:1",
        &[other],
        &ImageConfig::default(),
        TestImageFormat::DockerSave,
    )
    .unwrap();
    // The config is named by its digest, and manifest.json names it: both follow the edit.
    let mut members = Vec::new();
    for entry in tar::Archive::new(File::open(&out).unwrap())
        .entries()
        .unwrap()
    {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut contents = Vec::new();
        io::Read::read_to_end(&mut entry, &mut contents).unwrap();
        members.push((name, contents));
    }
    let (config_name, config) = members
        .iter_mut()
        .find(|(name, _)| name.ends_with(".json") && name != "manifest.json")
        .unwrap();
    let old_config_name = config_name.clone();
    *config = String::from_utf8(config.clone())
        .unwrap()
        .replace(&other_id, &private_id)
        .into_bytes();
    *config_name = format!("{}.json", Digest::of_bytes(config).hex());
    let new_config_name = config_name.clone();
    let mut builder = tar::Builder::new(File::create(&out).unwrap());
    for (name, contents) in &mut members {
        if name == "manifest.json" {
            *contents = String::from_utf8(contents.clone())
                .unwrap()
                .replace(&old_config_name, &new_config_name)
                .into_bytes();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name.as_str(), contents.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap();
    let error = f.store.import(&out).unwrap_err();
    assert!(
        matches!(&error, ImageError::DigestMismatch { expected, actual }
            if *expected == private_id && *actual == other_id),
        "{error} (private {private_id}, other {other_id})"
    );
    assert!(matches!(
        f.store.resolve("test/claim:1"),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn the_mount_point_layer_goes_on_top_of_images_with_a_plain_etc_and_outlives_them() {
    let f = fixture();
    let targets = f.store_root.join("layers/mount-targets");
    let mode = |p: &Path| p.symlink_metadata().unwrap().mode();
    for dir in ["etc", "proc", "sys", "dev"] {
        assert_eq!(mode(&targets.join(dir)), libc::S_IFDIR | 0o755, "{dir}");
    }
    for file in ["etc/hosts", "etc/resolv.conf"] {
        let meta = targets.join(file).symlink_metadata().unwrap();
        assert_eq!(
            (meta.mode(), meta.len()),
            (libc::S_IFREG | 0o644, 0),
            "{file}"
        );
    }

    // busybox's /etc is root's, 0755: the layer goes on top, and /etc/passwd still comes
    // from the image.
    f.store
        .import(&f.busybox_archive("busybox:1", TestImageFormat::DockerSave))
        .unwrap();
    let busybox = f.store.resolve("busybox:1").unwrap();
    assert_eq!(busybox.mount_targets.as_deref(), Some(targets.as_path()));
    let task_layers = busybox.task_layers();
    assert_eq!(task_layers.len(), busybox.layers.len() + 1);
    assert_eq!(task_layers.last(), Some(&targets));
    let passwd = layers::find_file(&task_layers, "etc/passwd")
        .unwrap()
        .unwrap();
    assert!(
        passwd.starts_with(&busybox.layers[0]),
        "{}",
        passwd.display()
    );

    // Another mode or a symlink would be hidden by the layer's /etc: no layer then. An image
    // without /etc (or with it whited out) gets it.
    let fits = |build: &dyn Fn(&mut LayerTar) -> io::Result<()>| {
        let archive = f.work.join("etc.tar");
        let layers = vec![
            layer(|l| l.file("bin/x", 0o755, b"x").map(drop)),
            layer(build),
        ];
        write_image_archive(
            &archive,
            "test/etc:1",
            &layers,
            &ImageConfig::default(),
            TestImageFormat::DockerSave,
        )
        .unwrap();
        f.store.import(&archive).unwrap();
        let resolved = f.store.resolve("test/etc:1").unwrap();
        f.store.remove("test/etc:1").unwrap();
        resolved.mount_targets.is_some()
    };
    assert!(!fits(&|l| l.dir("etc", 0o700).map(drop)));
    assert!(!fits(&|l| l.symlink("etc", "usr/etc").map(drop)));
    assert!(fits(&|l| l.dir("etc", 0o755).map(drop)));
    assert!(fits(&|l| l.file("usr/x", 0o644, b"x").map(drop)));

    // Not garbage: the same directory stays through removals and reopening, which adds what
    // it lacks (as for one made by a build with fewer mount points) and changes nothing else.
    let inode = |p: &Path| p.symlink_metadata().unwrap().ino();
    let (dir_inode, hosts_inode) = (inode(&targets), inode(&targets.join("etc/hosts")));
    f.store.remove("busybox:1").unwrap();
    assert_eq!(inode(&targets), dir_inode);
    fs::remove_file(targets.join("etc/resolv.conf")).unwrap();
    drop(ImageStore::open(&f.store_root).unwrap());
    assert_eq!(inode(&targets), dir_inode);
    assert_eq!(inode(&targets.join("etc/hosts")), hosts_inode);
    let resolv = targets.join("etc/resolv.conf").symlink_metadata().unwrap();
    assert_eq!((resolv.mode(), resolv.len()), (libc::S_IFREG | 0o644, 0));
}
