//! Running the real `corral up` binary in tests and benchmarks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a test's `corral.toml` holds.
#[derive(Default)]
pub struct UpOptions {
    /// `(provider, base_url)`; the key is read from `CORRAL_TEST_MODEL_KEY`.
    pub model: Option<(&'static str, String)>,
    /// The Slack stand-in's Web API base; binds channel `C0001` to
    /// `assistant`.
    pub slack_api: Option<String>,
    /// Added to the policies as `extra.cedar`.
    pub extra_policy: Option<String>,
    /// The agent image to use instead of building one.
    pub image: Option<String>,
    /// The `[broker]` table's lines (limits).
    pub broker: Option<&'static str>,
    /// The example components served from files; default echo, files and
    /// http-get.
    pub file_tools: Option<Vec<&'static str>>,
    /// More of `corral.toml`, appended as written (registry tools, trust).
    pub extra_toml: Option<String>,
}

/// The API key the tests give the model stand-ins; it must never appear in
/// a container, an audit row or a log line.
pub const TEST_MODEL_KEY: &str = "sk-test-CORRAL-e2e-4f1d9c0b7a";

/// A scratch directory with policies, workspaces and `corral.toml` for one
/// agent `assistant` (team `assistants`, tools echo, files, http-get).
pub struct UpConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl UpConfig {
    pub fn write(options: &UpOptions) -> UpConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let policies = dir.path().join("policies");
        crate::broker::copy_policies(&policies);
        if let Some(extra) = &options.extra_policy {
            std::fs::write(policies.join("extra.cedar"), extra).expect("extra policy");
        }
        let mut toml = String::from("state_dir = \"state\"\npolicies = \"policies\"\n");
        match &options.image {
            Some(tag) => toml.push_str(&format!("[image]\ntag = \"{tag}\"\n")),
            None => toml.push_str(&format!(
                "[image]\ndir = \"{}\"\nagent_binary = \"{}\"\n",
                crate::repo_root().join("agent-image").display(),
                crate::agent_binary().display()
            )),
        }
        let file_tools = options
            .file_tools
            .clone()
            .unwrap_or_else(|| vec!["echo", "files", "http-get"]);
        for tool in file_tools {
            toml.push_str(&format!(
                "[[tools]]\npath = \"{}\"\n",
                crate::component_path(tool).display()
            ));
        }
        toml.push_str("[[agents]]\nid = \"assistant\"\nteam = \"assistants\"\nworkspace = \"workspace/assistant\"\n");
        if options.model.is_some() {
            toml.push_str("model = \"main\"\n");
        }
        toml.push_str(
            "[agents.limits]\nmax_steps = 4\nmax_tokens = 512\nidle_secs = 600\ndisk_mib = 64\n",
        );
        if let Some((provider, url)) = &options.model {
            toml.push_str(&format!(
                "[models.main]\nprovider = \"{provider}\"\nmodel = \"scripted-1\"\nbase_url = \"{url}\"\napi_key_env = \"CORRAL_TEST_MODEL_KEY\"\n"
            ));
        }
        if let Some(api) = &options.slack_api {
            toml.push_str(&format!(
                "[slack]\napi_url = \"{api}\"\ndirect_messages = \"assistant\"\n[slack.channels]\nC0001 = \"assistant\"\n"
            ));
        }
        if let Some(broker) = options.broker {
            toml.push_str(&format!("[broker]\n{broker}\n"));
        }
        if let Some(extra) = &options.extra_toml {
            toml.push_str(extra);
        }
        let path = dir.path().join("corral.toml");
        std::fs::write(&path, toml).expect("corral.toml");
        UpConfig { dir, path }
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace/assistant")
    }

    pub fn audit(&self) -> PathBuf {
        self.dir.path().join("state/audit.db")
    }

    pub fn control(&self) -> PathBuf {
        self.dir.path().join("state/control.sock")
    }

    /// Every audit record, through `corral audit export --jsonl`.
    pub fn audit_records(&self, corral: &Path) -> Vec<serde_json::Value> {
        let out = Command::new(corral)
            .args(["audit", "export", "--jsonl", "--audit"])
            .arg(self.audit())
            .output()
            .expect("run corral audit export");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Asserts that `corral audit verify` passes.
    pub fn verify_audit(&self, corral: &Path) {
        let out = Command::new(corral)
            .args(["audit", "verify", "--audit"])
            .arg(self.audit())
            .output()
            .expect("run corral audit verify");
        assert!(
            out.status.success(),
            "audit verify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `needle` appears anywhere in the audit database's files.
    pub fn audit_contains(&self, needle: &str) -> bool {
        ["audit.db", "audit.db-wal", "audit.db-spool"]
            .iter()
            .any(|f| {
                std::fs::read(self.dir.path().join("state").join(f))
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            })
    }
}

/// A running `corral up`; stderr goes to a file the test can read.
pub struct UpHost {
    child: Child,
    pub sockets: Vec<(String, PathBuf)>,
    /// The `/metrics` URL, when `[web]` is configured.
    pub web: Option<String>,
    pub stderr: PathBuf,
}

impl UpHost {
    /// Starts `corral` (the binary under test) with `args` after `up`, and
    /// waits for `ready`.
    pub fn start(corral: &Path, config: &UpConfig, extra_args: &[&str]) -> UpHost {
        Self::start_in(corral, config, None, &config.path, extra_args)
    }

    /// As [`Self::start`], run from `cwd` with `--config config_arg` as
    /// given (a relative path, say).
    pub fn start_in(
        corral: &Path,
        config: &UpConfig,
        cwd: Option<&Path>,
        config_arg: &Path,
        extra_args: &[&str],
    ) -> UpHost {
        let stderr = config.dir.path().join("up.stderr");
        let mut command = Command::new(corral);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .arg("up")
            .arg("--config")
            .arg(config_arg)
            .args(["--grace", "10"])
            .args(extra_args)
            .env("RUST_LOG", "debug")
            .env("CORRAL_TEST_MODEL_KEY", TEST_MODEL_KEY)
            .env("SLACK_BOT_TOKEN", "xoxb-test-bot")
            .env("SLACK_APP_TOKEN", "xapp-test-app")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start corral up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sockets = Vec::new();
        let mut web = None;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    match parts[..] {
                        ["agent", id, "socket", path] => {
                            sockets.push((id.to_string(), PathBuf::from(path)));
                        }
                        ["web", url] => web = Some(url.to_string()),
                        _ => {}
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "corral up did not get ready; its stderr:\n{}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
            }
        }
        UpHost {
            child,
            sockets,
            web,
            stderr,
        }
    }

    pub fn socket(&self, agent: &str) -> PathBuf {
        self.sockets
            .iter()
            .find(|(a, _)| a == agent)
            .map(|(_, p)| p.clone())
            .expect("agent socket")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl UpHost {
    /// Kills the host as a crash would (SIGKILL): its containers keep
    /// running and its file systems stay mounted, for the next start.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpHost {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            // A killed host leaves its agents' file systems mounted; a
            // later start would reuse them, but this test is over.
            if let Some(dir) = self.stderr.parent() {
                for m in corral_sandbox::mounts().iter().rev() {
                    if m.mount_point.starts_with(dir) {
                        let _ = Command::new("umount")
                            .arg("-l")
                            .arg(&m.mount_point)
                            .output();
                    }
                }
            }
        }
    }
}
