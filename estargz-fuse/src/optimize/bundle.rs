//! The OCI runtime bundle `config.json` for the workload: process (args,
//! env, cwd, user) from the image config and the options, a fresh network
//! namespace (no network), the usual pseudo file systems, and the bind
//! mounts asked for.

use std::path::{Path, PathBuf};

use estargz_core::{Error, Result};
use serde_json::{json, Value};

/// `--mount SRC:DST[:ro]`: a host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

impl std::str::FromStr for BindMount {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<BindMount, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, ro) = match parts[..] {
            [src, dst] => (src, dst, false),
            [src, dst, "ro"] => (src, dst, true),
            [src, dst, "rw"] => (src, dst, false),
            _ => return Err(format!("{s:?}: expected SRC:DST[:ro]")),
        };
        if src.is_empty() || !dst.starts_with('/') {
            return Err(format!("{s:?}: expected SRC:DST[:ro] with an absolute DST"));
        }
        Ok(BindMount {
            source: PathBuf::from(src),
            destination: dst.to_string(),
            read_only: ro,
        })
    }
}

/// What the image config says about its process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageProcess {
    /// From an OCI / Docker image config (`config` object).
    pub fn from_config(config: &[u8]) -> Result<ImageProcess> {
        let v: Value = serde_json::from_slice(config)
            .map_err(|e| Error::InvalidArgument(format!("image config: {e}")))?;
        let c = &v["config"];
        let strings = |key: &str| -> Vec<String> {
            c[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |key: &str| c[key].as_str().unwrap_or_default().to_string();
        Ok(ImageProcess {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: string("WorkingDir"),
            user: string("User"),
        })
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process arguments: `args` when given, else entrypoint + cmd.
pub fn process_args(image: &ImageProcess, args: &[String]) -> Result<Vec<String>> {
    let out: Vec<String> = if args.is_empty() {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    } else {
        args.to_vec()
    };
    if out.is_empty() {
        return Err(Error::InvalidArgument(
            "the image has no entrypoint or cmd: give the command after `--`".into(),
        ));
    }
    Ok(out)
}

/// The image's environment with `extra` (`KEY=VALUE`) replacing or adding
/// variables, and a default PATH when there is none.
pub fn environment(image: &ImageProcess, extra: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut env: Vec<String> = Vec::new();
    for kv in image.env.iter().chain(extra) {
        let k = key(kv);
        env.retain(|e| key(e) != k);
        env.push(kv.clone());
    }
    if !env.iter().any(|e| key(e) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env
}

/// `user`, `uid`, `user:group` or `uid:gid`, names looked up in the root
/// file system's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let table = |file: &str| std::fs::read_to_string(rootfs.join(file)).unwrap_or_default();
    // name:x:uid:gid:... (passwd) or name:x:gid:... (group)
    let find = |text: &str, name: &str| -> Option<(u32, Option<u32>)> {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0] != name {
                return None;
            }
            let id = f[2].parse().ok()?;
            Some((id, f.get(3).and_then(|g| g.parse().ok())))
        })
    };
    let passwd = table("etc/passwd");
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2].parse() == Ok(uid))
                    .then(|| f[3].parse().ok())
                    .flatten()
            }),
        ),
        Err(_) => find(&passwd, u).ok_or_else(|| {
            Error::InvalidArgument(format!("user {u:?} is not in the image's /etc/passwd"))
        })?,
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                find(&table("etc/group"), g)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "group {g:?} is not in the image's /etc/group"
                        ))
                    })?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// What goes into the bundle.
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
}

/// The `config.json` of a bundle whose root file system is `rootfs`.
pub fn runtime_config(process: &Process, rootfs: &Path, binds: &[BindMount]) -> Value {
    // Docker's default capability set.
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for b in binds {
        let mut options = vec!["rbind", "rprivate"];
        if b.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": b.destination,
            "type": "bind",
            "source": b.source,
            "options": options,
        }));
    }
    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        &process.cwd
    };
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": process.uid, "gid": process.gid},
            "args": process.args,
            "env": process.env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "estargz-optimize",
        "mounts": mounts,
        "linux": {
            // A network namespace of its own: loopback only, so the
            // recording does not depend on (or reach) any network.
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_parse() {
        let b: BindMount = "/data:/mnt/data:ro".parse().unwrap();
        assert_eq!(
            b,
            BindMount {
                source: "/data".into(),
                destination: "/mnt/data".into(),
                read_only: true
            }
        );
        assert!(!"/a:/b".parse::<BindMount>().unwrap().read_only);
        for bad in ["/a", "/a:b", ":/b", "/a:/b:rx", "/a:/b:ro:x"] {
            assert!(bad.parse::<BindMount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn process_comes_from_the_config_and_the_options() {
        let config = br#"{"config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],
            "Env":["PATH=/opt/bin","LANG=C"],"WorkingDir":"/srv","User":"app"}}"#;
        let p = ImageProcess::from_config(config).unwrap();
        assert_eq!(process_args(&p, &[]).unwrap(), ["/bin/app", "--serve"]);
        assert_eq!(process_args(&p, &["sh".into()]).unwrap(), ["sh"]);
        assert!(process_args(&ImageProcess::default(), &[]).is_err());
        assert_eq!(
            environment(&p, &["LANG=C.UTF-8".into(), "X=1".into()]),
            ["PATH=/opt/bin", "LANG=C.UTF-8", "X=1"]
        );
        assert_eq!(environment(&ImageProcess::default(), &[]), [DEFAULT_PATH]);
    }

    #[test]
    fn users_resolve_by_number_or_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |u: &str| resolve_user(u, dir.path());
        assert_eq!(r("").unwrap(), (0, 0));
        assert_eq!(r("app").unwrap(), (1000, 1001));
        assert_eq!(r("1000").unwrap(), (1000, 1001));
        assert_eq!(r("4242").unwrap(), (4242, 0));
        assert_eq!(r("app:staff").unwrap(), (1000, 50));
        assert_eq!(r("7:8").unwrap(), (7, 8));
        assert!(r("nobody").is_err());
        assert!(r("app:nogroup").is_err());
    }
}
