//! The s3flow binary as a user runs it, with its peak memory.

use std::process::{Command, Stdio};

/// Runs `s3flow SUBCOMMAND ARGS...`, returning (exit code, stdout, stderr, peak RSS in bytes).
pub async fn run(subcommand: &'static str, args: Vec<String>) -> (i32, String, String, u64) {
    tokio::task::spawn_blocking(move || {
        let child = Command::new(env!("CARGO_BIN_EXE_s3flow"))
            .arg(subcommand)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let output = std::thread::spawn(move || {
            let mut child = child;
            let (mut out, mut err) = (String::new(), String::new());
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            std::mem::forget(child); // reaped by wait4 below
            (out, err)
        });
        let (out, err) = output.join().unwrap();
        let mut status = 0;
        // SAFETY: plain syscall on our own child; rusage is written by the kernel.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(reaped, pid);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        (code, out, err, usage.ru_maxrss as u64 * 1024)
    })
    .await
    .unwrap()
}

/// Starts `s3flow SUBCOMMAND ARGS...` with its output captured, to be stopped by [`interrupt`].
pub fn spawn(subcommand: &str, args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_s3flow"))
        .arg(subcommand)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `child` SIGINT (Ctrl-C) and asserts that it ends with a failure saying it stopped.
pub async fn interrupt(child: std::process::Child) {
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}
