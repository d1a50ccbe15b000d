//! The default seccomp profile of container tasks, enforced by the container's init right
//! before it execs the workload (see `shim::SeccompExecutor`).
//!
//! The filter is built in Rust (seccompiler) instead of through libcontainer's `libseccomp`
//! feature, which needs the libseccomp C library at build time (a `-dev` package for glibc
//! builds, a musl-built `libseccomp.a` for the static binary). It follows the syscalls the
//! OCI/Docker default profile withholds from containers without extra capabilities:
//! kernel modules, kexec, reboot, clocks, swap, mounts and namespaces (including `clone`
//! with namespace flags), keyrings, BPF and perf, tracing other processes, NUMA policy,
//! io_uring, and obsolete calls. A denied call fails with EPERM; `clone3` fails with ENOSYS
//! so that libc falls back to `clone`, whose flags the filter can see. Other architectures'
//! and x32 system calls are refused outright.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// System calls no container task may make.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS__sysctl,
    libc::SYS_sysfs,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    libc::SYS_ustat,
    libc::SYS_vhangup,
];

/// `clone` flags that create namespaces: refused like `unshare`.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// First syscall number of the x32 ABI (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// The default profile as BPF programs, to be installed in order (the kernel runs every
/// installed filter; the strictest answer wins). One program today.
pub fn default_profile() -> Result<Vec<BpfProgram>, String> {
    let errno = |e: i32| SeccompAction::Errno(e as u32);
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, vec![])).collect();
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = *flag as u32 as u64;
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(|e| format!("seccomp condition: {e}"))?;
        clone_rules
            .push(SeccompRule::new(vec![condition]).map_err(|e| format!("seccomp rule: {e}"))?);
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        errno(libc::EPERM),
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    // Another answer than the others: a filter of its own whose "allow" goes on into the
    // next, so the kernel runs (and the container's init installs) one program.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        errno(libc::ENOSYS),
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let compile = |f: SeccompFilter| {
        BpfProgram::try_from(f).map_err(|e| format!("compiling seccomp filter: {e}"))
    };
    let program = continue_into(refuse_x32(), compile(clone3)?)?;
    Ok(vec![continue_into(program, compile(deny)?)?])
}

// Classic BPF, as seccomp runs it (linux/filter.h, linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// Refuses every x32 system call (the x86_64 architecture tag with `__X32_SYSCALL_BIT` set),
/// not only the x32 numbers of the denied calls: several have x32 numbers of their own
/// (ptrace is 521, process_vm_readv 539). Other architectures are killed, as seccompiler's
/// filters do.
fn refuse_x32() -> BpfProgram {
    vec![
        bpf(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        bpf(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        bpf(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        bpf(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        bpf(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT as u32),
        bpf(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        bpf(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// `first` followed by `then`, with every `return ALLOW` of `first` turned into a jump to the
/// start of `then`: where `first` would allow, `then` decides. Jumps in classic BPF are
/// relative and only forward, so no other jump changes.
fn continue_into(mut first: BpfProgram, then: BpfProgram) -> Result<BpfProgram, String> {
    let length = first.len();
    for (i, instruction) in first.iter_mut().enumerate() {
        if instruction.code == BPF_RET_K && instruction.k == libc::SECCOMP_RET_ALLOW {
            *instruction = bpf(BPF_JMP_JA, 0, 0, (length - i - 1) as u32);
        }
    }
    first.extend(then);
    // The kernel's limit on a program's length (BPF_MAXINSNS).
    if first.len() > 4096 {
        return Err(format!("seccomp program of {} instructions", first.len()));
    }
    Ok(first)
}

/// Installs `programs` in the calling process (which must have no_new_privs set, as the
/// container init has). Everything it execs afterwards runs under them.
pub fn install(programs: &[BpfProgram]) -> Result<(), String> {
    for program in programs {
        seccompiler::apply_filter(program)
            .map_err(|e| format!("installing seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles() {
        let programs = default_profile().unwrap();
        assert_eq!(programs.len(), 1);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    /// A child process installs the profile and tries what it denies and what it allows.
    #[test]
    fn denied_calls_fail_and_others_work() {
        let programs = default_profile().unwrap();
        // SAFETY: the child only makes raw syscalls and exits; it never returns.
        match unsafe { libc::fork() } {
            0 => {
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                if install(&programs).is_err() {
                    unsafe { libc::_exit(10) };
                }
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                // Flags the kernel itself refuses with EINVAL: only the filter answers EPERM
                // (an unprivileged test could get EPERM from the kernel for a new user
                // namespace).
                let unshare = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_PARENT) };
                if unshare != -1 || errno() != libc::EPERM {
                    unsafe { libc::_exit(11) };
                }
                let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
                if clone3 != -1 || errno() != libc::ENOSYS {
                    unsafe { libc::_exit(12) };
                }
                let keyctl = unsafe { libc::syscall(libc::SYS_keyctl, 0, 0) };
                if keyctl != -1 || errno() != libc::EPERM {
                    unsafe { libc::_exit(13) };
                }
                let flags = (libc::CLONE_NEWUSER | libc::CLONE_FS | libc::SIGCHLD) as libc::c_long;
                let clone = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
                if clone == 0 {
                    unsafe { libc::_exit(0) };
                }
                if clone != -1 || errno() != libc::EPERM {
                    unsafe { libc::_exit(16) };
                }
                // The filter answers before the kernel looks for an x32 call: the x32
                // number of a denied call, and ptrace's own x32 number (521).
                for nr in [libc::SYS_keyctl | X32_SYSCALL_BIT, 521 | X32_SYSCALL_BIT] {
                    let x32 = unsafe { libc::syscall(nr, 0, 0) };
                    if x32 != -1 || errno() != libc::EPERM {
                        unsafe { libc::_exit(15) };
                    }
                }
                if unsafe { libc::getpid() } <= 0 {
                    unsafe { libc::_exit(14) };
                }
                unsafe { libc::_exit(0) };
            }
            -1 => panic!("fork failed"),
            child => {
                let mut status = 0;
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "child status {status}");
                assert_eq!(
                    libc::WEXITSTATUS(status),
                    0,
                    "see the exit codes in the child"
                );
            }
        }
    }
}
