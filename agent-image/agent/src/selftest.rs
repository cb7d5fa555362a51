//! `corral-agent selftest`: tries, from inside the container, what a
//! compromised agent would try, and reports each attempt. Exit code 0 means
//! every attempt was blocked. The sandbox tests run it in real containers;
//! an operator can run it to check a deployment.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One attempt: `Ok(what stopped it)` or `Err(what got through)`.
type Attempt = Result<String, String>;
type Probe = fn() -> Attempt;

fn network() -> Attempt {
    // Public DNS, the default Docker bridge gateway, and loopback: with no
    // network there is no route to the first two and nothing listens on
    // the third.
    for addr in ["1.1.1.1:53", "172.17.0.1:2375", "127.0.0.1:2375"] {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
            return Err(format!("connected to {addr}"));
        }
    }
    Ok("no TCP connection could be made".into())
}

fn dns() -> Attempt {
    match ("example.com", 443).to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => Err(format!("resolved example.com to {a}")),
            None => Ok("example.com resolved to nothing".into()),
        },
        Err(e) => Ok(format!("name lookup failed: {e}")),
    }
}

fn root_filesystem() -> Attempt {
    for path in ["/probe", "/etc/probe", "/usr/local/bin/probe"] {
        if std::fs::File::create(path).is_ok() {
            return Err(format!("wrote {path}"));
        }
    }
    Ok("the root filesystem is read-only".into())
}

fn host_paths() -> Attempt {
    for path in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/root",
        "/home",
        "/etc/shadow",
        "/proc/1/root/etc/shadow",
    ] {
        if std::fs::symlink_metadata(path).is_ok() && std::fs::read(path).is_ok() {
            return Err(format!("{path} is readable"));
        }
    }
    Ok("no host path is visible".into())
}

fn other_sockets() -> Attempt {
    // The directory is the host's and may not even be listed (mode 0710);
    // where it can be, it holds this agent's socket alone.
    match std::fs::read_dir("/run/corral") {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(format!("/run/corral: {e}")),
        Ok(dir) => {
            let entries: Vec<String> = dir
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            if entries != ["mcp.sock"] {
                return Err(format!(
                    "/run/corral holds {entries:?}, not only this agent's socket"
                ));
            }
        }
    }
    if std::os::unix::net::UnixStream::connect("/run/corral/mcp.sock").is_err() {
        return Err("this agent's own socket cannot be reached".into());
    }
    if std::fs::read_dir("/run/corral/..")
        .is_ok_and(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name() != "corral"))
    {
        return Err("/run holds other entries".into());
    }
    Ok("only this agent's socket is mounted".into())
}

/// The socket directory is the host's: an agent that could add, rename or
/// remove entries there could plant a link for the host to follow.
fn socket_dir() -> Attempt {
    let dir = std::path::Path::new("/run/corral");
    if std::fs::File::create(dir.join("probe")).is_ok() {
        let _ = std::fs::remove_file(dir.join("probe"));
        return Err("created a file in /run/corral".into());
    }
    if std::os::unix::fs::symlink("/etc/passwd", dir.join("probe-link")).is_ok() {
        let _ = std::fs::remove_file(dir.join("probe-link"));
        return Err("created a link in /run/corral".into());
    }
    if std::fs::rename(dir.join("mcp.sock"), dir.join("moved.sock")).is_ok() {
        let _ = std::fs::rename(dir.join("moved.sock"), dir.join("mcp.sock"));
        return Err("renamed /run/corral/mcp.sock".into());
    }
    Ok("nothing can be created, renamed or removed in /run/corral".into())
}

/// What the outside attack did: while the host (re)starts, keep renaming
/// a link to `target` over the socket's path, so that a host that chowns
/// the path after binding would hand `target` to this uid. Runs until
/// killed; prints a line a second with how many tries got through.
pub fn socket_race(target: &str) -> u8 {
    let dir = std::path::Path::new("/run/corral");
    let (link, socket) = (dir.join(".race"), dir.join("mcp.sock"));
    let (mut tries, mut through) = (0u64, 0u64);
    let mut last = std::time::Instant::now();
    loop {
        tries += 1;
        let _ = std::fs::remove_file(&link);
        if std::os::unix::fs::symlink(target, &link).is_ok()
            && std::fs::rename(&link, &socket).is_ok()
        {
            through += 1;
        }
        // Thousands of tries a second, without taking a whole core.
        std::thread::sleep(Duration::from_micros(50));
        if last.elapsed() >= Duration::from_secs(1) {
            println!("socket-race: {tries} tries, {through} got through");
            let _ = std::io::stdout().flush();
            last = std::time::Instant::now();
        }
    }
}

/// Corral's seccomp profile refuses debugging and kernel-facing calls a
/// tool runner never needs; `ptrace` on PID 1 once left a container that
/// could not exit.
fn syscalls() -> Attempt {
    const PTRACE_ATTACH: libc::c_long = 16;
    // SAFETY: each call only asks the kernel; none touches this process's memory.
    let tries: [(&str, libc::c_long); 4] = unsafe {
        [
            (
                "ptrace(ATTACH, 1)",
                libc::syscall(libc::SYS_ptrace, PTRACE_ATTACH, 1, 0, 0),
            ),
            ("userfaultfd", libc::syscall(libc::SYS_userfaultfd, 0)),
            (
                "keyctl",
                libc::syscall(libc::SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0),
            ),
            (
                "personality(READ_IMPLIES_EXEC)",
                libc::syscall(libc::SYS_personality, 0x0400000),
            ),
        ]
    };
    if tries[0].1 == 0 {
        const PTRACE_DETACH: libc::c_long = 17;
        // SAFETY: lets go of the process the attach above stopped.
        unsafe { libc::syscall(libc::SYS_ptrace, PTRACE_DETACH, 1, 0, 0) };
    }
    for (name, rc) in tries {
        if rc != -1 {
            return Err(format!("{name} succeeded"));
        }
    }
    Ok("ptrace, userfaultfd, keyctl and personality changes are refused".into())
}

fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

fn identity() -> Attempt {
    let uid = status_field("Uid:").ok_or("no Uid in /proc/self/status")?;
    // real, effective, saved, filesystem
    let uid = uid.split_whitespace().collect::<Vec<_>>().join("/");
    if uid.split('/').any(|u| u == "0") {
        return Err(format!("running as root (Uid: {uid})"));
    }
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let caps = status_field(field).ok_or(format!("no {field}"))?;
        if u64::from_str_radix(&caps, 16).map_err(|e| e.to_string())? != 0 {
            return Err(format!("{field} {caps}"));
        }
    }
    let nnp = status_field("NoNewPrivs:").unwrap_or_default();
    if nnp != "1" {
        return Err(format!("NoNewPrivs is {nnp:?}"));
    }
    Ok(format!("uid {uid}, no capabilities, no new privileges"))
}

fn threads() -> Attempt {
    // Threads count against the pids limit like processes; a scratch image
    // has nothing else to fork. Stop at 4096, far above any sane limit.
    let mut spawned = Vec::new();
    for _ in 0..4096 {
        match std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| std::thread::sleep(Duration::from_secs(3)))
        {
            Ok(h) => spawned.push(h),
            Err(e) => {
                let n = spawned.len();
                drop(spawned);
                return Ok(format!("stopped after {n} threads: {e}"));
            }
        }
    }
    Err("spawned 4096 threads".into())
}

/// Runs every probe except the memory bomb; `memory` runs that alone,
/// since the kernel ends the process when it works.
pub fn run(which: Option<&str>) -> u8 {
    if which == Some("memory") {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            hoard.push(vec![1u8; 16 << 20]);
            if hoard.len().is_multiple_of(64) {
                println!("holding {} MiB", hoard.len() * 16);
                let _ = std::io::stdout().flush();
            }
        }
    }
    let probes: [(&str, Probe); 9] = [
        ("network", network),
        ("dns", dns),
        ("root-filesystem", root_filesystem),
        ("host-paths", host_paths),
        ("other-sockets", other_sockets),
        ("socket-dir", socket_dir),
        ("syscalls", syscalls),
        ("identity", identity),
        ("pids", threads),
    ];
    let mut escaped = 0;
    for (name, probe) in probes {
        if which.is_some_and(|w| w != name) {
            continue;
        }
        match probe() {
            Ok(why) => println!("blocked {name}: {why}"),
            Err(what) => {
                escaped += 1;
                println!("ESCAPED {name}: {what}");
            }
        }
    }
    u8::from(escaped > 0)
}
