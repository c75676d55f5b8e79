//! Starting one container as a local process: its argv, environment and a private mount namespace in
//! which the paths the pod expects (volume mounts, the termination message file) resolve.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Container;

/// A bind mount set up in the container's own mount namespace.
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Whether `image` is s3flow's own image: its repository's last path component is `s3flow`.
/// An image's name without registry, tag or digest: `registry/team/tool:1` is `tool`.
fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    last.split(':').next().unwrap_or_default()
}

pub fn is_s3flow_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    last.split(':').next() == Some("s3flow")
}

/// The argv of a container. The s3flow image runs the binary under test (its entrypoint); any other
/// image runs its command as given, since the node agent has no image metadata to find an entrypoint.
/// An image's own programs live in `<images>/<name>/bin` (the name without registry, tag or digest):
/// a command found there is that image's, as a container's PATH would find it.
pub fn argv(
    container: &Container,
    s3flow_binary: &Path,
    images: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let mut argv = container.command.clone().unwrap_or_default();
    let image = container.image.clone().unwrap_or_default();
    let own = images.join(image_name(&image)).join("bin");
    if let Some(first) = argv.first_mut()
        && !is_s3flow_image(&image)
        && own.join(first.as_str()).is_file()
    {
        *first = own.join(first.as_str()).display().to_string();
    }
    if is_s3flow_image(&image) {
        let binary = s3flow_binary.display().to_string();
        match argv.first() {
            None => argv.push(binary),
            Some(first) if Path::new(first).file_name() == Some("s3flow".as_ref()) => {
                argv[0] = binary
            }
            Some(_) => {}
        }
    }
    if argv.is_empty() {
        bail!(
            "image {:?} needs an explicit command: the node agent cannot read image entrypoints",
            container.image.as_deref().unwrap_or_default()
        );
    }
    argv.extend(container.args.clone().unwrap_or_default());
    Ok(argv.iter().map(|a| crate::inputs::expand(a, env)).collect())
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("path with a NUL byte")
}

/// Creates the mount point on the host when it is missing: a directory for a directory source, an
/// empty file for a file source. It stays empty on the host; the bind shows only inside the process.
fn ensure_mount_point(bind: &Bind) -> Result<()> {
    if bind.target.exists() {
        return Ok(());
    }
    if bind.source.is_dir() {
        std::fs::create_dir_all(&bind.target)?;
    } else {
        if let Some(parent) = bind.target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&bind.target)?;
    }
    Ok(())
}

/// Spawns the process in its own process group and mount namespace, stdout and stderr to `log`.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    binds: &[Bind],
    working_dir: &Path,
    log: &Path,
) -> Result<tokio::process::Child> {
    for bind in binds {
        ensure_mount_point(bind)
            .with_context(|| format!("mount point {}", bind.target.display()))?;
    }
    // Everything the child needs is allocated here: after fork only syscalls run.
    let mounts: Vec<(CString, CString, bool)> = binds
        .iter()
        .map(|b| Ok((cstring(&b.source)?, cstring(&b.target)?, b.read_only)))
        .collect::<Result<_>>()?;
    let root = CString::new("/").expect("static");
    let workdir = cstring(working_dir)?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure only makes async-signal-safe syscalls on memory allocated before fork.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &mounts {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            // After the binds, so that a working dir inside a volume is the volume.
            check(libc::chdir(workdir.as_ptr()))
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))
}

/// Sends `signal` to the whole process group of `pid`.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_s3flow_image_by_repository() {
        for (image, want) in [
            ("s3flow", true),
            ("s3flow:0.1.0", true),
            ("ghcr.io/acme/s3flow:latest", true),
            ("localhost:5000/s3flow", true),
            ("ghcr.io/acme/s3flow@sha256:abc", true),
            ("busybox", false),
            ("ghcr.io/s3flow/worker:1", false),
            ("s3flow-extra:1", false),
        ] {
            assert_eq!(is_s3flow_image(image), want, "{image}");
        }
    }

    #[test]
    fn maps_the_s3flow_entrypoint_and_keeps_other_commands() {
        let env = BTreeMap::from([("N".to_string(), "3".to_string())]);
        let bin = Path::new("/build/s3flow");
        let container = |image: &str, command: Option<Vec<&str>>, args: Vec<&str>| Container {
            image: Some(image.into()),
            command: command.map(|c| c.into_iter().map(String::from).collect()),
            args: Some(args.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        let images = std::env::temp_dir().join(format!("images-{}", std::process::id()));
        std::fs::create_dir_all(images.join("forger/bin")).unwrap();
        std::fs::write(images.join("forger/bin/s3flow"), "#!/bin/sh\n").unwrap();
        let run = |c: &Container| argv(c, bin, &images, &env).unwrap();
        assert_eq!(
            run(&container("s3flow:1", None, vec!["version"])),
            ["/build/s3flow", "version"]
        );
        assert_eq!(
            run(&container(
                "s3flow:1",
                Some(vec!["/usr/bin/s3flow"]),
                vec!["worker", "$(N)"]
            )),
            ["/build/s3flow", "worker", "3"]
        );
        assert_eq!(
            run(&container(
                "busybox",
                Some(vec!["sh", "-c"]),
                vec!["exit 1"]
            )),
            ["sh", "-c", "exit 1"]
        );
        assert!(argv(&container("busybox", None, vec![]), bin, &images, &env).is_err());
        // An image's own program is found in its bin directory, as a container's PATH would.
        assert_eq!(
            run(&container(
                "registry.test/forger:2",
                Some(vec!["s3flow"]),
                vec!["worker"]
            )),
            [
                images.join("forger/bin/s3flow").display().to_string(),
                "worker".into()
            ]
        );
        assert_eq!(
            run(&container("other:1", Some(vec!["s3flow"]), vec![])),
            ["s3flow"]
        );
        std::fs::remove_dir_all(&images).unwrap();
    }
}
