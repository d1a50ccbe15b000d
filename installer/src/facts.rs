//! What the installer learns of a node: one probe script run over SSH prints `key=value`
//! lines, and `parse` turns them into `Facts`. The script only reads; it needs no tool beyond
//! a POSIX shell, coreutils and /proc.

use std::collections::{BTreeMap, BTreeSet};

/// Where the installer puts things on a node.
pub const BINARY_PATH: &str = "/usr/local/bin/dcos-rs";
pub const CONFIG_DIR: &str = "/etc/dcos-rs";
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Written first when the installer claims a node (`cluster=`, `role=`, `name=`): a rerun
/// after a failure knows the node is this cluster's.
pub const MARKER_FILE: &str = "/etc/dcos-rs/installed";

/// The files whose sha256 the probe reports, so the plan can skip identical uploads.
pub fn watched_files() -> Vec<String> {
    let mut files = vec![BINARY_PATH.to_string(), MARKER_FILE.to_string()];
    for name in [
        "master.toml",
        "agent.toml",
        "ca.crt",
        "tokens",
        "node.crt",
        "node.key",
    ] {
        files.push(format!("{CONFIG_DIR}/{name}"));
    }
    for unit in ["dcos-rs-master.service", "dcos-rs-agent.service"] {
        files.push(format!("{UNIT_DIR}/{unit}"));
    }
    files
}

/// The probe: `sh -s -- <data dir>` with this on stdin.
pub fn probe_script() -> String {
    let files = watched_files().join(" ");
    format!(
        r#"set -u
data_dir=$1
echo "time=$(date +%s.%N)"
echo "uid=$(id -u)"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${{ID:-unknown}} ${{VERSION_ID:-}}"; else echo "os=unknown"; fi
echo "namespaces=$(ls /proc/self/ns 2>/dev/null | tr '\n' ' ')"
echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
for c in memory cpu pids; do [ -d /sys/fs/cgroup/$c ] && echo "cgroup_v1=$c"; done
[ -r /sys/fs/cgroup/cgroup.controllers ] && echo "cgroup_v2_controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
grep -qw overlay /proc/filesystems && echo "overlayfs=yes"
[ -d /run/systemd/system ] && echo "systemd=running"
command -v systemctl >/dev/null 2>&1 && echo "systemctl=$(command -v systemctl)"
[ "$(id -u)" = 0 ] || {{ sudo -n true 2>/dev/null && echo "sudo=yes"; }}
for f in /proc/net/tcp /proc/net/tcp6; do
  [ -r $f ] && while read -r sl local rem st rest; do [ "$st" = 0A ] && echo "listen=$local"; done < $f
done
d=$data_dir; while [ ! -e "$d" ]; do d=$(dirname "$d"); done
echo "disk_path=$d"
echo "disk_free_kib=$(df -Pk "$d" | awk 'NR==2 {{print $4}}')"
for f in {files}; do [ -f $f ] && echo "file=$(sha256sum $f)"; done
for u in dcos-rs-master dcos-rs-agent; do
  command -v systemctl >/dev/null 2>&1 && echo "unit=$u $(systemctl is-active $u 2>/dev/null)"
done
[ -r {marker} ] && sed 's/^/marker_/' {marker}
echo "end=1"
"#,
        marker = MARKER_FILE,
    )
}

/// Facts of one node, as the probe printed them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Facts {
    /// The node's clock (seconds since the epoch) when the probe ran.
    pub time: f64,
    pub uid: u32,
    pub sudo: bool,
    pub arch: String,
    pub kernel: String,
    pub os: String,
    pub namespaces: BTreeSet<String>,
    /// `cgroup2fs` on a v2 host, `tmpfs` on a v1 or hybrid one.
    pub cgroup_fs: String,
    pub cgroup_v1: BTreeSet<String>,
    pub cgroup_v2_controllers: BTreeSet<String>,
    pub overlayfs: bool,
    /// systemd is the init system (/run/systemd/system exists).
    pub systemd: bool,
    pub systemctl: bool,
    /// TCP ports something listens on.
    pub listening: BTreeSet<u16>,
    /// The nearest existing directory of the data dir, and its free space.
    pub disk_path: String,
    pub disk_free_kib: u64,
    /// sha256 (hex) of the watched files that exist.
    pub files: BTreeMap<String, String>,
    /// `systemctl is-active` of our units: active, inactive, failed, ...
    pub units: BTreeMap<String, String>,
    /// The marker of a finished install: cluster and role.
    pub marker: BTreeMap<String, String>,
}

impl Facts {
    /// The installed cluster's name, if a finished install left its marker.
    pub fn installed_cluster(&self) -> Option<&str> {
        self.marker.get("cluster").map(String::as_str)
    }

    pub fn unit_active(&self, unit: &str) -> bool {
        self.units.get(unit).is_some_and(|s| s == "active")
    }

    /// (major, minor) of the kernel release.
    pub fn kernel_version(&self) -> Option<(u32, u32)> {
        let mut parts = self.kernel.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// Why a probe's output is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("the probe's output ended early (no `end=1` line): {0:?}")]
    Truncated(String),
    #[error("the probe printed a bad line {line:?}: {reason}")]
    BadLine { line: String, reason: String },
}

/// Parses the probe's standard output.
pub fn parse(output: &str) -> Result<Facts, ProbeError> {
    let mut facts = Facts::default();
    let mut ended = false;
    for line in output.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let bad = |reason: &str| ProbeError::BadLine {
            line: line.to_string(),
            reason: reason.to_string(),
        };
        match key {
            "time" => facts.time = value.parse().map_err(|_| bad("not a time"))?,
            "uid" => facts.uid = value.parse().map_err(|_| bad("not a uid"))?,
            "sudo" => facts.sudo = value == "yes",
            "arch" => facts.arch = value.to_string(),
            "kernel" => facts.kernel = value.to_string(),
            "os" => facts.os = value.trim().to_string(),
            "namespaces" => {
                facts.namespaces = value.split_whitespace().map(str::to_string).collect()
            }
            "cgroup_fs" => facts.cgroup_fs = value.to_string(),
            "cgroup_v1" => {
                facts.cgroup_v1.insert(value.to_string());
            }
            "cgroup_v2_controllers" => {
                facts.cgroup_v2_controllers = value.split_whitespace().map(str::to_string).collect()
            }
            "overlayfs" => facts.overlayfs = value == "yes",
            "systemd" => facts.systemd = value == "running",
            "systemctl" => facts.systemctl = !value.is_empty(),
            "listen" => {
                // `0100007F:1F90` (IPv4) or 32 hex digits and the port (IPv6).
                let port = value
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                facts
                    .listening
                    .insert(port.ok_or_else(|| bad("not an address:port in hex"))?);
            }
            "disk_path" => facts.disk_path = value.to_string(),
            "disk_free_kib" => {
                facts.disk_free_kib = value.trim().parse().map_err(|_| bad("not a size"))?
            }
            "file" => {
                // `file=` alone: the file is there but unreadable (not root): its hash is
                // unknown, so the plan writes it again.
                if let Some((hash, path)) = value.split_once(char::is_whitespace) {
                    facts
                        .files
                        .insert(path.trim().to_string(), hash.to_string());
                }
            }
            "unit" => {
                let (unit, state) = value.split_once(' ').unwrap_or((value, ""));
                facts
                    .units
                    .insert(unit.to_string(), state.trim().to_string());
            }
            "end" => ended = true,
            key if key.starts_with("marker_") => {
                facts
                    .marker
                    .insert(key["marker_".len()..].to_string(), value.to_string());
            }
            _ => {}
        }
    }
    if !ended {
        return Err(ProbeError::Truncated(output.chars().take(200).collect()));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "time=1764835200.250000000\nuid=0\narch=x86_64\nkernel=6.1.0-27-amd64\nos=debian 12\n\
        namespaces=cgroup ipc mnt net pid pid_for_children time time_for_children user uts \n\
        cgroup_fs=tmpfs\ncgroup_v1=memory\ncgroup_v1=cpu\ncgroup_v1=pids\noverlayfs=yes\nsystemd=running\n\
        systemctl=/usr/bin/systemctl\nlisten=00000000:0016\nlisten=0000000000000000FFFF00000100007F:13BA\n\
        disk_path=/var/lib\ndisk_free_kib=10485760\n\
        file=ab12  /usr/local/bin/dcos-rs\nunit=dcos-rs-master active\nunit=dcos-rs-agent inactive\n\
        marker_cluster=prod\nmarker_role=master\nend=1\n";

    #[test]
    fn the_probe_output_becomes_facts() {
        let facts = parse(OUTPUT).unwrap();
        assert_eq!(facts.time, 1764835200.25);
        assert_eq!(facts.kernel_version(), Some((6, 1)));
        assert!(facts.namespaces.contains("user") && facts.namespaces.contains("cgroup"));
        assert_eq!(facts.cgroup_v1.len(), 3);
        assert_eq!(facts.listening, BTreeSet::from([22, 5050]));
        assert_eq!(facts.disk_free_kib, 10 << 20);
        assert_eq!(facts.files["/usr/local/bin/dcos-rs"], "ab12");
        assert!(facts.unit_active("dcos-rs-master") && !facts.unit_active("dcos-rs-agent"));
        assert_eq!(facts.installed_cluster(), Some("prod"));
        assert!(facts.systemd && facts.overlayfs && !facts.sudo);
    }

    #[test]
    fn a_cut_output_or_a_bad_line_is_an_error() {
        assert!(matches!(
            parse("time=1\nuid=0\n"),
            Err(ProbeError::Truncated(_))
        ));
        assert!(matches!(
            parse("listen=zz\nend=1\n"),
            Err(ProbeError::BadLine { .. })
        ));
    }

    #[test]
    fn the_script_watches_every_file_the_plan_writes() {
        let script = probe_script();
        for file in watched_files() {
            assert!(script.contains(&file), "{file}");
        }
    }
}
