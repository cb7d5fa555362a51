//! The tool author's and the operator's commands, as they run them:
//! `corral tool new` and `build` for Rust and Python, `keygen`, `push`,
//! `sign`, `pull` and `inspect` against a real registry behind basic auth,
//! with credentials from a Docker config file.

use std::path::Path;
use std::process::{Command, Output};

use corral_tests::registry::Registry;
use corral_tests::{component_path, repo_root, target_dir};

fn corral(args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .env("COSIGN_PASSWORD", "correct horse")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run corral")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpectedly succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn publish_sign_pull_and_inspect_through_a_registry_with_basic_auth() {
    let registry = Registry::with_auth("alice", "s3cret");
    let docker = registry.docker_config();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let creds: &[(&str, &Path)] = &[("DOCKER_CONFIG", docker.path())];
    let echo = component_path("echo");
    let reference = format!("{}/tools/echo:1.0", registry.addr);

    // Without credentials the registry refuses, and the message says how to log in.
    let no_creds = tempfile::tempdir().unwrap();
    let err = failed(&corral(
        &["tool", "push", &echo.display().to_string(), &reference],
        w,
        &[("DOCKER_CONFIG", no_creds.path())],
    ));
    assert!(err.contains("docker login"), "{err}");

    let out = ok(&corral(&["tool", "keygen", "--out", "acme"], w, creds));
    assert!(out.contains("acme.pub"), "{out}");
    let again = failed(&corral(&["tool", "keygen", "--out", "acme"], w, creds));
    assert!(again.contains("already exists"), "{again}");

    let out = ok(&corral(
        &["tool", "push", &echo.display().to_string(), &reference],
        w,
        creds,
    ));
    let pinned = out
        .lines()
        .find_map(|l| l.strip_prefix("pushed "))
        .expect("the pinned reference")
        .to_string();
    assert!(pinned.contains("@sha256:"), "{out}");

    // Pulling an unsigned tool with a publisher listed is refused, and nothing is stored.
    let store = w.join("store");
    let store_arg = store.display().to_string();
    let err = failed(&corral(
        &[
            "tool",
            "pull",
            &pinned,
            "--store",
            &store_arg,
            "--publisher",
            "acme=acme.pub",
        ],
        w,
        creds,
    ));
    assert!(
        err.contains("no signature") && err.contains("corral tool sign"),
        "{err}"
    );
    assert!(
        !store.join("blobs/sha256").exists()
            || std::fs::read_dir(store.join("blobs/sha256"))
                .unwrap()
                .count()
                == 0
    );

    ok(&corral(
        &["tool", "sign", "--key", "acme.key", &pinned],
        w,
        creds,
    ));
    let out = ok(&corral(
        &[
            "tool",
            "pull",
            &pinned,
            "--store",
            &store_arg,
            "--publisher",
            "acme=acme.pub",
        ],
        w,
        creds,
    ));
    assert!(out.contains("publisher  acme"), "{out}");

    // The wrong password is named.
    let err = failed(
        &Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["tool", "sign", "--key", "acme.key", &pinned])
            .current_dir(w)
            .env("COSIGN_PASSWORD", "wrong")
            .env("DOCKER_CONFIG", docker.path())
            .output()
            .unwrap(),
    );
    assert!(err.contains("wrong password"), "{err}");

    let out = ok(&corral(
        &["tool", "inspect", &pinned, "--publisher", "acme=acme.pub"],
        w,
        creds,
    ));
    assert!(out.contains("publisher: signed by acme"), "{out}");
    assert!(out.contains("tool echo"), "{out}");
    assert!(
        out.contains("corral:tool/logging@0.1.0") || out.contains("wasi:"),
        "lists imports: {out}"
    );
    let out = ok(&corral(&["tool", "inspect", &pinned], w, creds));
    assert!(out.contains("not trusted here"), "{out}");

    // A file planted under the reference's name is not signed in its place.
    std::fs::create_dir_all(w.join(format!("{}/tools", registry.addr))).unwrap();
    std::fs::copy(&echo, w.join(&reference)).unwrap();
    let err = failed(&corral(
        &["tool", "sign", "--key", "acme.key", &reference],
        w,
        creds,
    ));
    assert!(
        err.contains("both a file here and a registry reference"),
        "{err}"
    );
    assert!(!w.join(format!("{reference}.sig")).exists());

    // A local file is signed beside it, and judged by the same publishers.
    std::fs::copy(&echo, w.join("echo.wasm")).unwrap();
    ok(&corral(
        &["tool", "sign", "--key", "acme.key", "echo.wasm"],
        w,
        creds,
    ));
    assert!(w.join("echo.wasm.sig").is_file());
    let out = ok(&corral(
        &[
            "tool",
            "inspect",
            "echo.wasm",
            "--publisher",
            "acme=acme.pub",
        ],
        w,
        creds,
    ));
    assert!(out.contains("publisher: signed by acme"), "{out}");
    std::fs::write(
        w.join("echo.wasm"),
        std::fs::read(component_path("files")).unwrap(),
    )
    .unwrap();
    let out = ok(&corral(
        &[
            "tool",
            "inspect",
            "echo.wasm",
            "--publisher",
            "acme=acme.pub",
        ],
        w,
        creds,
    ));
    assert!(
        out.contains("not trusted here") && out.contains("over sha256:"),
        "a changed file loses its signature: {out}"
    );
}

#[test]
fn a_rust_tool_is_scaffolded_built_checked_and_called() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let sdk = repo_root().join("wit/rust");
    let target = target_dir().join("scaffold");
    let env: &[(&str, &Path)] = &[("CARGO_TARGET_DIR", &target)];
    ok(&corral(
        &[
            "tool",
            "new",
            "word-count",
            "--lang",
            "rust",
            "--sdk-path",
            &sdk.display().to_string(),
        ],
        w,
        env,
    ));
    let project = w.join("word-count");
    assert!(project.join("README.md").is_file() && project.join("test.sh").is_file());
    let out = ok(&corral(&["tool", "build", "word-count"], w, env));
    assert!(out.contains("tool word_count"), "{out}");
    assert!(out.contains("sha256 = "), "prints the pin: {out}");
    let wasm = project.join("word-count.wasm");
    let out = ok(&corral(
        &[
            "tool",
            "call",
            &wasm.display().to_string(),
            "word_count",
            r#"{"name":"Ada"}"#,
        ],
        w,
        env,
    ));
    assert!(out.contains("Hello, Ada!"), "{out}");

    // A non-empty directory is refused and left alone.
    let err = failed(&corral(
        &["tool", "new", "word-count", "--lang", "rust"],
        w,
        env,
    ));
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn a_component_corral_would_refuse_is_refused_at_build_with_the_load_message() {
    let work = tempfile::tempdir().unwrap();
    let target = target_dir().join("guest");
    let env: &[(&str, &Path)] = &[("CARGO_TARGET_DIR", &target)];
    let sneaky = repo_root().join("examples/tools/sneaky");
    let out_file = work.path().join("sneaky.wasm");
    let err = failed(&corral(
        &[
            "tool",
            "build",
            &sneaky.display().to_string(),
            "--out",
            &out_file.display().to_string(),
        ],
        work.path(),
        env,
    ));
    let load = failed(&corral(
        &[
            "tool",
            "inspect",
            &component_path("sneaky").display().to_string(),
        ],
        work.path(),
        &[],
    ));
    let message = "imports `test:sneaky/backdoor`";
    assert!(err.contains(message), "{err}");
    assert!(load.contains(message), "{load}");
    assert!(!out_file.exists(), "nothing is written");
}

#[test]
fn a_python_tool_is_scaffolded_built_and_called() {
    let componentize = target_dir().join("py/bin/componentize-py");
    assert!(
        componentize.exists(),
        "run `cargo xtask setup`: {} is missing",
        componentize.display()
    );
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    ok(&corral(
        &["tool", "new", "greet", "--lang", "python"],
        w,
        &[],
    ));
    let env: &[(&str, &Path)] = &[("CORRAL_COMPONENTIZE_PY", &componentize)];
    let out = ok(&corral(&["tool", "build", "greet"], w, env));
    assert!(out.contains("tool greet"), "{out}");
    let wasm = w.join("greet/greet.wasm");
    let out = ok(&corral(
        &[
            "tool",
            "call",
            &wasm.display().to_string(),
            "greet",
            r#"{"name":"Ada"}"#,
        ],
        w,
        &[],
    ));
    assert!(out.contains("Hello, Ada!"), "{out}");
}

/// Pushes `tool` to the registry as `tools/TOOL:1` and returns the pinned reference.
fn push_example(registry: &Registry, tool: &str, w: &Path) -> String {
    let reference = format!("{}/tools/{tool}:1", registry.addr);
    let out = ok(&corral(
        &[
            "tool",
            "push",
            &component_path(tool).display().to_string(),
            &reference,
        ],
        w,
        &[],
    ));
    out.lines()
        .find_map(|l| l.strip_prefix("pushed "))
        .expect("the pinned reference")
        .to_string()
}

#[test]
fn corral_up_serves_registry_tools_from_its_store_and_policy_sees_their_publisher() {
    use corral_tests::up::{UpConfig, UpHost, UpOptions};
    let mut registry = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let k = keys.path();
    ok(&corral(&["tool", "keygen", "--out", "acme"], k, &[]));
    let files = push_example(&registry, "files", k);
    ok(&corral(
        &["tool", "sign", "--key", "acme.key", &files],
        k,
        &[],
    ));
    let http_get = push_example(&registry, "http-get", k);
    let extra = format!(
        "[trust.publishers]\nacme = \"{}\"\n[[tools]]\noci = \"{files}\"\n[[tools]]\noci = \"{http_get}\"\nallow_unsigned = true\n",
        k.join("acme.pub").display()
    );
    let config = UpConfig::write(&UpOptions {
        file_tools: Some(vec!["echo"]),
        extra_toml: Some(extra),
        ..UpOptions::default()
    });
    let corral_bin: &Path = env!("CARGO_BIN_EXE_corral").as_ref();
    let check = |host: &UpHost| {
        let socket = host.socket("assistant").display().to_string();
        let tools = ok(&Command::new(corral_bin)
            .args(["mcp", "tools", "--socket", &socket])
            .output()
            .unwrap());
        assert!(
            tools.contains("files_list"),
            "the signed registry tool is offered: {tools}"
        );
        let listed = Command::new(corral_bin)
            .args([
                "mcp",
                "call",
                "--socket",
                &socket,
                "files_list",
                r#"{"path":""}"#,
            ])
            .output()
            .unwrap();
        assert!(listed.status.success(), "{}", text(&listed.stderr));
        let refused = Command::new(corral_bin)
            .args([
                "mcp",
                "call",
                "--socket",
                &socket,
                "http_get",
                r#"{"url":"https://api.github.com/"}"#,
            ])
            .output()
            .unwrap();
        assert_eq!(
            refused.status.code(),
            Some(3),
            "denied: {}",
            text(&refused.stdout)
        );
        let said = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
        assert!(
            said.contains("no-unsigned-registry-tools"),
            "names the policy: {said}"
        );
    };
    let host = UpHost::start(corral_bin, &config, &["--external-agents"]);
    check(&host);
    host.stop();
    // The registry goes down; the pinned tools start from the store.
    registry.stop();
    let host = UpHost::start(corral_bin, &config, &["--external-agents"]);
    check(&host);
    host.stop();
    config.verify_audit(corral_bin);
}
