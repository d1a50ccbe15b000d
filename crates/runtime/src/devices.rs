//! Which devices a task may use: the standard set a process expects (null, zero, full,
//! random, urandom, tty, console, ptmx and the pseudo-terminals), nothing else. No disk, no
//! memory device, no tun, whatever capabilities the task holds.
//!
//! The rules go into the OCI config (`linux.resources.devices`: deny all, then allow each
//! standard device) and are enforced by the kernel on every host layout:
//! - cgroup v1 (and hybrid): the `devices` controller. libcgroups writes our rules and then
//!   its own defaults (mknod of any device, tun/tap); `tighten_v1` takes those back.
//! - cgroup v2: there is no devices file, only a BPF program of type `CGROUP_DEVICE`
//!   attached to the task's cgroup. libcgroups can build one only with its
//!   `cgroupsv2_devices` feature, which links the libbpf C library (no static musl build);
//!   `program` assembles the few instructions needed here and `attach_v2` loads and
//!   attaches them with the `bpf` system call, as `seccomp` builds its filters in Rust.
//!
//! Both are applied by the shim after the task's cgroup exists and before the task's own
//! code runs (container: between create and start; plain process: before its gate opens).

use std::path::Path;

/// A device class in a rule (`a` in a rule means every class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Char,
    Block,
}

/// An allowed device: its class and numbers (`None`: any minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub kind: Kind,
    pub major: u32,
    pub minor: Option<u32>,
    pub name: &'static str,
}

const fn char_dev(major: u32, minor: Option<u32>, name: &'static str) -> Allowed {
    Allowed {
        kind: Kind::Char,
        major,
        minor,
        name,
    }
}

/// The standard devices, each with read, write and mknod access.
pub const ALLOWED: &[Allowed] = &[
    char_dev(1, Some(3), "/dev/null"),
    char_dev(1, Some(5), "/dev/zero"),
    char_dev(1, Some(7), "/dev/full"),
    char_dev(1, Some(8), "/dev/random"),
    char_dev(1, Some(9), "/dev/urandom"),
    char_dev(5, Some(0), "/dev/tty"),
    char_dev(5, Some(1), "/dev/console"),
    char_dev(5, Some(2), "/dev/ptmx"),
    char_dev(136, None, "/dev/pts/*"),
];

/// `linux.resources.devices` of the OCI config: everything denied, then the standard set.
pub fn oci_rules() -> serde_json::Value {
    let mut rules = vec![serde_json::json!({ "allow": false, "access": "rwm" })];
    for device in ALLOWED {
        let mut rule = serde_json::json!({
            "allow": true,
            "type": match device.kind { Kind::Char => "c", Kind::Block => "b" },
            "major": device.major,
            "access": "rwm"
        });
        if let Some(minor) = device.minor {
            rule["minor"] = minor.into();
        }
        rules.push(rule);
    }
    serde_json::Value::Array(rules)
}

/// Rules libcgroups's v1 devices controller adds after the config's (mknod of every char
/// and block device, tun/tap), taken back by writing them to `devices.deny`. On a deny-all
/// cgroup a deny removes the matching exception.
const V1_LIBRARY_DEFAULTS: &[&str] = &["c *:* m", "b *:* m", "c 10:200 rwm"];

/// On a v1 `devices` hierarchy: removes libcgroups's extra defaults from the task's cgroup
/// (`/sys/fs/cgroup/devices/<cgroup_path>`), leaving exactly `oci_rules`.
pub fn tighten_v1(devices_cgroup: &Path) -> Result<(), String> {
    let deny = devices_cgroup.join("devices.deny");
    for rule in V1_LIBRARY_DEFAULTS {
        std::fs::write(&deny, rule)
            .map_err(|e| format!("writing {rule:?} to {}: {e}", deny.display()))?;
    }
    Ok(())
}

// The kernel's `struct bpf_cgroup_dev_ctx`: `access_type` (device class in the low 16
// bits, access bits above), `major`, `minor`; each a u32.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
/// BPF_DEVCG_DEV_BLOCK and BPF_DEVCG_DEV_CHAR.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// BPF_DEVCG_ACC_MKNOD, _READ and _WRITE.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The kernel's 8-byte little-endian encoding (registers: dst in the low nibble).
    pub fn encode(&self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }
}

// Opcodes: class | operation | source.
const LDX_MEM_W: u8 = 0x01 | 0x60; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x07 | 0x50;
const ALU64_RSH_K: u8 = 0x07 | 0x70;
const ALU64_MOV_K: u8 = 0x07 | 0xb0;
const ALU64_MOV_X: u8 = 0x07 | 0xb0 | 0x08;
const JMP_JNE_K: u8 = 0x05 | 0x50;
const JMP_EXIT: u8 = 0x05 | 0x90;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// The device program for `allowed`: 1 (allow) when the access matches a rule, else 0.
///
/// ```text
///   r2 = ctx.access_type & 0xffff    (class)
///   r3 = ctx.access_type >> 16       (access bits)
///   r4 = ctx.major; r5 = ctx.minor
///   per rule: class != rule's -> next; access outside rwm -> next; major != -> next;
///             minor != (unless any) -> next; return 1
///   return 0
/// ```
pub fn program(allowed: &[Allowed]) -> Vec<Insn> {
    let mut code = vec![
        insn(LDX_MEM_W, 2, 1, CTX_ACCESS_TYPE, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, CTX_ACCESS_TYPE, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, CTX_MAJOR, 0),
        insn(LDX_MEM_W, 5, 1, CTX_MINOR, 0),
    ];
    for device in allowed {
        let kind = match device.kind {
            Kind::Char => DEV_CHAR,
            Kind::Block => DEV_BLOCK,
        };
        // Each check jumps over the rest of this rule's block when it fails.
        let block_len = 7 + usize::from(device.minor.is_some());
        let mut block = Vec::with_capacity(block_len);
        let skip_rest = |block: &Vec<Insn>| (block_len - block.len() - 1) as i16;
        block.push(insn(JMP_JNE_K, 2, 0, skip_rest(&block), kind));
        // r1 = access & !rwm: nonzero is an access the rule does not grant.
        block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
        let rwm = (ACC_MKNOD | ACC_READ | ACC_WRITE) as i32;
        block.push(insn(ALU64_AND_K, 1, 0, 0, !rwm));
        block.push(insn(JMP_JNE_K, 1, 0, skip_rest(&block), 0));
        block.push(insn(
            JMP_JNE_K,
            4,
            0,
            skip_rest(&block),
            device.major as i32,
        ));
        if let Some(minor) = device.minor {
            block.push(insn(JMP_JNE_K, 5, 0, skip_rest(&block), minor as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        debug_assert_eq!(block.len(), block_len);
        code.extend(block);
    }
    code.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    code.push(insn(JMP_EXIT, 0, 0, 0, 0));
    code
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of ancestor cgroups run too (systemd and runc attach theirs this way).
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the rest stays zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    padding: [u64; 8],
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    padding: [u32; 11],
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<i32> {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` prefix of the size passed.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result as i32)
    }
}

fn load(code: &[Insn], log: Option<&mut Vec<u8>>) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let bytes: Vec<u8> = code.iter().flat_map(Insn::encode).collect();
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: bytes.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..7].copy_from_slice(b"dcos_rs");
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Loads the program for `ALLOWED` and attaches it to the v2 cgroup directory `cgroup_dir`
/// (the program stays attached as long as the cgroup exists). On a load failure the
/// kernel verifier's log is part of the error.
pub fn attach_v2(cgroup_dir: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let code = program(ALLOWED);
    let program = match load(&code, None) {
        Ok(fd) => fd,
        Err(e) => {
            let mut log = vec![0u8; 64 * 1024];
            let _ = load(&code, Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            return Err(format!(
                "loading the device program: {e} (verifier: {})",
                String::from_utf8_lossy(&log[..end]).trim()
            ));
        }
    };
    let cgroup = std::fs::File::open(cgroup_dir)
        .map_err(|e| format!("opening {}: {e}", cgroup_dir.display()))?;
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        format!(
            "attaching the device program to {}: {e}",
            cgroup_dir.display()
        )
    })?;
    Ok(())
}

/// Enforces `ALLOWED` on the task's cgroup at `cgroup_path` under `root`
/// (`/sys/fs/cgroup`): the v2 program when the host is unified, else the v1 tightening.
pub fn enforce(root: &Path, unified: bool, cgroup_path: &str) -> Result<(), String> {
    let relative = cgroup_path.trim_start_matches('/');
    if unified {
        attach_v2(&root.join(relative))
    } else {
        tighten_v1(&root.join("devices").join(relative))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `code` in rbpf's interpreter (an eBPF implementation independent of ours) on a
    /// `bpf_cgroup_dev_ctx`.
    fn decide(code: &[Insn], kind: i32, access: u32, major: u32, minor: u32) -> bool {
        let bytes: Vec<u8> = code.iter().flat_map(Insn::encode).collect();
        let vm = rbpf::EbpfVmRaw::new(Some(&bytes)).expect("a valid program");
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&((access << 16) | kind as u32).to_le_bytes());
        ctx.extend_from_slice(&major.to_le_bytes());
        ctx.extend_from_slice(&minor.to_le_bytes());
        match vm.execute_program(&mut ctx).expect("runs") {
            1 => true,
            0 => false,
            other => panic!("the program returned {other}"),
        }
    }

    #[test]
    fn the_program_allows_exactly_the_standard_devices() {
        let code = program(ALLOWED);
        let all = ACC_MKNOD | ACC_READ | ACC_WRITE;
        for device in ALLOWED {
            let minor = device.minor.unwrap_or(7);
            for access in [ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE, all] {
                assert!(
                    decide(&code, DEV_CHAR, access, device.major, minor),
                    "{} access {access}",
                    device.name
                );
            }
            // The same numbers as a block device are another device.
            assert!(!decide(&code, DEV_BLOCK, ACC_READ, device.major, minor));
        }
        // Any pseudo-terminal.
        assert!(decide(&code, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 4095));
        let denied = [
            (DEV_BLOCK, 254, 0, "the host's disk (virtio)"),
            (DEV_BLOCK, 8, 0, "the host's disk (sd)"),
            (DEV_BLOCK, 7, 0, "a loop device"),
            (DEV_CHAR, 1, 1, "/dev/mem"),
            (DEV_CHAR, 1, 2, "/dev/kmem"),
            (DEV_CHAR, 1, 11, "/dev/kmsg"),
            (DEV_CHAR, 10, 200, "/dev/net/tun"),
            (DEV_CHAR, 10, 229, "/dev/fuse"),
            (DEV_CHAR, 4, 1, "/dev/tty1"),
            (DEV_CHAR, 5, 3, "next to console"),
            (DEV_CHAR, 137, 0, "next to the pts"),
        ];
        for (kind, major, minor, what) in denied {
            for access in [ACC_READ, ACC_WRITE, ACC_MKNOD] {
                assert!(
                    !decide(&code, kind, access, major, minor),
                    "{what} access {access}"
                );
            }
        }
        // An access bit the kernel does not define yet is not granted by "rwm".
        assert!(!decide(&code, DEV_CHAR, ACC_READ | 8, 1, 3));
    }

    #[test]
    fn an_empty_list_denies_everything() {
        let code = program(&[]);
        assert!(!decide(&code, DEV_CHAR, ACC_READ, 1, 3));
        assert_eq!(code.len(), 8);
    }

    #[test]
    fn encoding_is_the_kernels() {
        // `r0 = 1` and `exit`, as clang and the kernel's own samples encode them.
        assert_eq!(
            insn(ALU64_MOV_K, 0, 0, 0, 1).encode(),
            [0xb7, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            insn(JMP_EXIT, 0, 0, 0, 0).encode(),
            [0x95, 0, 0, 0, 0, 0, 0, 0]
        );
        // `r2 = *(u32 *)(r1 + 4)`.
        assert_eq!(
            insn(LDX_MEM_W, 2, 1, 4, 0).encode(),
            [0x61, 0x12, 4, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn the_oci_rules_deny_all_then_allow_the_standard_set() {
        let rules = oci_rules();
        let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
            serde_json::from_value(rules).expect("valid OCI device rules");
        assert!(!rules[0].allow());
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        let allowed: Vec<String> = rules[1..].iter().map(|r| r.to_string()).collect();
        assert!(allowed.contains(&"c 1:3 rwm".to_string()), "{allowed:?}");
        assert!(allowed.contains(&"c 136:* rwm".to_string()), "{allowed:?}");
        assert_eq!(allowed.len(), ALLOWED.len());
    }

    /// The v2 hierarchy of this host: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified`
    /// (hybrid, as on the CI machine, where the v1 controllers also run).
    fn v2_root() -> Option<std::path::PathBuf> {
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.join("cgroup.controllers").exists())
    }

    /// Live, as root: a process in a v2 cgroup with the program attached cannot read a byte
    /// of a disk through a node made for it, while
    /// /dev/null and /dev/zero still work; the same process outside the cgroup can.
    #[test]
    fn the_attached_program_keeps_the_hosts_disk_out_of_reach() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test attaches BPF programs to cgroups: run it as root (CI does)"
        );
        let root = v2_root().expect("a cgroup v2 hierarchy (unified or hybrid)");
        let cgroup = root.join(format!("dcos-rs-devices-test-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A readable disk: this machine refuses reads of its own to everyone.
        let device = crate::testimage::LoopDevice::attach(&dir.path().join("backing")).unwrap();
        let (major, minor) = (device.major, device.minor);
        let disk = dir.path().join("disk");
        nix::sys::stat::mknod(
            &disk,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            libc::makedev(major, minor),
        )
        .unwrap();
        let script = |join: bool| {
            format!(
                "{} if head -c1 {} >/dev/null 2>&1; then echo disk-read; else echo disk-denied; fi; \
                 head -c4 /dev/zero | wc -c",
                if join {
                    format!("echo $$ > {}/cgroup.procs || exit 9;", cgroup.display())
                } else {
                    String::new()
                },
                disk.display()
            )
        };
        let run = |join: bool| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(script(join))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let outside = run(false);
        attach_v2(&cgroup).expect("the program loads and attaches");
        let inside = run(true);
        let _ = std::fs::remove_dir(&cgroup);
        assert_eq!(
            outside.split_whitespace().collect::<Vec<_>>(),
            ["disk-read", "4"],
            "the test itself can read {major}:{minor}"
        );
        assert_eq!(
            inside.split_whitespace().collect::<Vec<_>>(),
            ["disk-denied", "4"],
            "in the cgroup: {inside}"
        );
    }
}
