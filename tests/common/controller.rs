//! `s3flow controller` as a process against the local environment, and what it publishes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

/// The operator, running until dropped; its output goes to `logs/<log>.log` of the environment.
pub struct Controller(Child, std::path::PathBuf);

impl Controller {
    pub fn start(env: &super::TestEnv, log: &str, args: &[&str]) -> Self {
        let path = env.env_dir.join(format!("logs/{log}.log"));
        let log = std::fs::File::create(&path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_s3flow"))
            .arg("controller")
            // Several operators run at once: each serves its endpoints on a free loopback port.
            .args([
                "--http-host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--probe-port",
                "0",
            ])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self(child, path)
    }

    /// Whether the process still runs (it never exited, so it never restarted).
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    /// The process's peak resident memory so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Asks the process to stop (SIGTERM), as a rollout does, and waits up to `seconds` for it to
    /// exit; whether it exited by then (else it is left running).
    pub fn stop(&mut self, seconds: u64) -> bool {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: a plain signal to a child process this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        for _ in 0..seconds * 10 {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Stops the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s for an Event about `name` with `reason` and `type_` (Events follow the status).
pub async fn assert_event(client: &Client, ns: &str, name: &str, reason: &str, type_: &str) {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = api.list(&ListParams::default()).await.unwrap().items;
        seen.retain(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name));
        if seen
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some(type_))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no {type_} Event {reason} for {name}: {seen:?}");
}
