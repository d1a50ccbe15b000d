//! From an app's launch request and an image config to what the shim runs: the argv, env
//! and working directory (Marathon/Mesos rules), and the OCI runtime `config.json`.
//!
//! Pure functions over data; writing the file is the caller's job.

use crate::image::{ImageConfig, MOUNT_POINT_FILES};
use crate::task_dir::ShimSpec;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities of a container task: those the OCI runtime spec's default config keeps
/// (`runc spec`) less `CAP_MKNOD` (device nodes: the standard ones are made for the task)
/// and `CAP_NET_RAW` (raw sockets: spoofed packets on the bridge, ping aside).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

/// Marathon's rules: `cmd` runs under `/bin/sh -c` and replaces the image's entrypoint;
/// `args` replace the image's Cmd and follow its Entrypoint; with neither, the image's
/// Entrypoint + Cmd run. App env overrides image env; `extra_env` (MESOS_TASK_ID, ...) wins.
pub fn resolve_process(
    image: Option<&ImageConfig>,
    cmd: Option<&str>,
    args: Option<&[String]>,
    app_env: &BTreeMap<String, String>,
    extra_env: &BTreeMap<String, String>,
    default_cwd: &str,
) -> Result<ResolvedProcess, String> {
    let empty = ImageConfig::default();
    let config = image.unwrap_or(&empty);
    let argv: Vec<String> = match (cmd, args) {
        (Some(cmd), _) => vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        (None, Some(args)) => config
            .entrypoint
            .iter()
            .chain(args.iter())
            .cloned()
            .collect(),
        (None, None) => config
            .entrypoint
            .iter()
            .chain(config.cmd.iter())
            .cloned()
            .collect(),
    };
    if argv.is_empty() {
        return Err(
            "nothing to run: no cmd, no args and the image has no Entrypoint or Cmd".into(),
        );
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if image.is_some() {
        env.insert("PATH".into(), DEFAULT_PATH["PATH=".len()..].into());
    } else if let Ok(path) = std::env::var("PATH") {
        env.insert("PATH".into(), path);
    }
    for entry in &config.env {
        if let Some((k, v)) = entry.split_once('=') {
            env.insert(k.into(), v.into());
        }
    }
    env.extend(app_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let cwd = match &config.working_dir {
        Some(dir) if !dir.is_empty() => dir.clone(),
        _ => default_cwd.to_string(),
    };
    Ok(ResolvedProcess {
        args: argv,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
    })
}

/// Resolves `user` (`uid`, `uid:gid`, or a name in the image's /etc/passwd) to ids.
pub fn resolve_user(
    user: Option<&str>,
    image_layers: Option<&[PathBuf]>,
) -> Result<(u32, u32), String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let passwd = || match image_layers {
        // The image is untrusted: a symlinked /etc or /etc/passwd would make us read a file
        // of the host's.
        Some(layers) => match crate::image::layers::find_file(layers, "etc/passwd") {
            Ok(Some(path)) => Ok(std::fs::read_to_string(path).unwrap_or_default()),
            Ok(None) => Ok(String::new()),
            Err(e) => Err(format!("{e}; give user '{name}' as a numeric uid")),
        },
        None => Ok(std::fs::read_to_string("/etc/passwd").unwrap_or_default()),
    };
    let (uid, mut gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => passwd()?
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == name)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| format!("user '{name}' is not in the image's /etc/passwd"))?,
    };
    if let Some(group) = group {
        gid = group
            .parse()
            .map_err(|_| format!("group '{group}' must be numeric"))?;
    }
    Ok((uid, gid))
}

/// The OCI runtime config for a container task: pid/mount/uts/ipc namespaces, the task's
/// network namespace on the bridge (else the host's network), a user namespace with the
/// task's id mapping when it asked for one, the runtime spec's default capabilities, masked
/// and read-only paths, and cgroup limits from the task's resources.
pub fn oci_config(spec: &ShimSpec) -> Result<Value, String> {
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let resources = serde_json::to_value(crate::cgroups::linux_resources(spec)?)
        .map_err(|e| format!("serializing cgroup resources: {e}"))?;
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"] }),
        // A user namespace may mount sysfs only with a network namespace it owns; the task's
        // is the host's or one made by the agent, so it gets the host's /sys bound read-only
        // instead (as runc does).
        if spec.user_namespace.is_some() {
            json!({ "destination": "/sys", "type": "bind", "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "rro"] })
        } else {
            json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
                    "options": ["nosuid", "noexec", "nodev", "ro"] })
        },
    ];
    // The host's name resolution, read-only.
    for file in MOUNT_POINT_FILES {
        mounts.push(json!({ "destination": format!("/{file}"), "type": "bind",
                            "source": format!("/{file}"), "options": ["rbind", "ro"] }));
    }
    for volume in &spec.mounts {
        mounts.push(match (&volume.source, volume.tmpfs_size_mib) {
            (Some(source), _) => json!({
                "destination": volume.destination, "type": "bind", "source": source,
                "options": ["rbind", if volume.read_only { "rro" } else { "rw" }, "nosuid", "nodev"]
            }),
            (None, size) => json!({
                "destination": volume.destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", format!("size={}m", size.unwrap_or(64)),
                            if volume.read_only { "ro" } else { "rw" }]
            }),
        });
    }
    let mut namespaces = vec![
        json!({ "type": "pid" }),
        json!({ "type": "ipc" }),
        json!({ "type": "uts" }),
        json!({ "type": "mount" }),
    ];
    if let Some(network) = &spec.network {
        namespaces.push(json!({ "type": "network", "path": network.netns_path() }));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": spec.cgroup_path,
        "resources": resources,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS
    });
    if let Some(map) = &spec.user_namespace {
        // Created first by libcontainer, so the other new namespaces belong to it.
        linux["namespaces"]
            .as_array_mut()
            .expect("namespaces is an array")
            .push(json!({ "type": "user" }));
        let mapping = json!([{ "containerID": 0, "hostID": map.host_base, "size": map.size }]);
        linux["uidMappings"] = mapping.clone();
        linux["gidMappings"] = mapping;
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": spec.uid, "gid": spec.gid },
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024u64, "soft": 1024u64 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": linux
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=1".into()],
            env: vec!["A=image".into(), "B=image".into()],
            working_dir: Some("/app".into()),
            ..Default::default()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn marathon_process_rules() {
        let img = image();
        let none = BTreeMap::new();
        type Case<'a> = (Option<&'a str>, Option<Vec<String>>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (Some("echo hi"), None, vec!["/bin/sh", "-c", "echo hi"]),
            (None, Some(vec!["x".into()]), vec!["/entry", "x"]),
            (None, None, vec!["/entry", "serve", "--port=1"]),
        ];
        for (cmd, args, expected) in cases {
            let p = resolve_process(Some(&img), cmd, args.as_deref(), &none, &none, "/").unwrap();
            assert_eq!(p.args, expected);
            assert_eq!(p.cwd, "/app");
        }
    }

    #[test]
    fn env_precedence_image_then_app_then_extra() {
        let p = resolve_process(
            Some(&image()),
            Some("true"),
            None,
            &env(&[("B", "app"), ("C", "app")]),
            &env(&[("C", "extra")]),
            "/",
        )
        .unwrap();
        assert!(p.env.contains(&"A=image".to_string()));
        assert!(p.env.contains(&"B=app".to_string()));
        assert!(p.env.contains(&"C=extra".to_string()));
        assert!(p.env.iter().any(|e| e.starts_with("PATH=")));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let none = BTreeMap::new();
        assert!(
            resolve_process(Some(&ImageConfig::default()), None, None, &none, &none, "/").is_err()
        );
    }

    #[test]
    fn names_resolve_in_the_image_but_never_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "app:x:1001:1002::/:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user(Some("app"), Some(&[root.path().to_path_buf()])).unwrap(),
            (1001, 1002)
        );
        let evil = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(root.path().join("etc"), evil.path().join("etc")).unwrap();
        let error = resolve_user(Some("app"), Some(&[evil.path().to_path_buf()])).unwrap_err();
        assert!(error.contains("symlink"), "{error}");
    }

    #[test]
    fn numeric_users() {
        assert_eq!(resolve_user(None, None).unwrap(), (0, 0));
        assert_eq!(resolve_user(Some("1000"), None).unwrap(), (1000, 1000));
        assert_eq!(resolve_user(Some("1000:5"), None).unwrap(), (1000, 5));
        assert!(resolve_user(Some("no-such-user-here"), None).is_err());
    }

    fn shim_spec(user_namespace: Option<crate::userns::IdMap>) -> ShimSpec {
        ShimSpec {
            task_id: "t".into(),
            framework_id: String::new(),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            image_rootfs: None,
            image_layers: vec!["/images/layers/a".into(), "/images/layers/b".into()],
            image_digest: Some(format!("sha256:{}", "0".repeat(64))),
            hostname: "t".into(),
            cgroup_path: "/dcos-rs/t".into(),
            mem_limit_bytes: 64 << 20,
            cpus_milli: 100,
            pids_limit: 100,
            kill_grace_ms: 1000,
            container_state_root: "/state".into(),
            mounts: vec![],
            stop_signal: libc::SIGTERM,
            log_max_bytes: 1 << 20,
            log_files_max: 1,
            network: None,
            user_namespace,
            disk_limit_bytes: 0,
            output_tail_bytes: 0,
        }
    }

    fn sys_mount(config: &Value) -> Value {
        config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_user_namespace_maps_ids_and_binds_sys_only_when_asked() {
        let plain = oci_config(&shim_spec(None)).unwrap();
        let types: Vec<&Value> = plain["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &n["type"])
            .collect();
        assert!(!types.contains(&&json!("user")), "{types:?}");
        assert!(plain["linux"].get("uidMappings").is_none());
        assert_eq!(sys_mount(&plain)["type"], "sysfs");

        let map = crate::userns::IdMap::agent_default();
        let mapped = oci_config(&shim_spec(Some(map))).unwrap();
        let namespaces = mapped["linux"]["namespaces"].as_array().unwrap();
        assert!(
            namespaces.contains(&json!({ "type": "user" })),
            "{namespaces:?}"
        );
        let expected = json!([{ "containerID": 0, "hostID": map.host_base, "size": map.size }]);
        assert_eq!(mapped["linux"]["uidMappings"], expected);
        assert_eq!(mapped["linux"]["gidMappings"], expected);
        let sys = sys_mount(&mapped);
        assert_eq!(sys["type"], "bind");
        assert!(sys["options"].as_array().unwrap().contains(&json!("rro")));
        // What libcontainer parses: the config is a valid OCI spec either way.
        for config in [plain, mapped] {
            serde_json::from_value::<oci_spec::runtime::Spec>(config).unwrap();
        }
    }
}
