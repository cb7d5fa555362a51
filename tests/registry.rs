//! Tool distribution against a real OCI registry (`docker-registry` on
//! loopback): push, pull, signatures and trust, the store serving pinned
//! tools with the registry down, and each bad input refused with nothing
//! left in the store.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use corral_distribution::signature::{Payload, PrivateKey};
use corral_distribution::{
    DistributionError, FetchedTool, Publishers, RegistryClient, RegistryOptions, SignatureEntry,
    ToolReference, ToolStore, TrustRule, layout,
};
use corral_tests::component_bytes;
use corral_tests::registry::Registry;
use corral_tools::{Allocation, ToolRuntime};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn runtime() -> &'static ToolRuntime {
    static RT: std::sync::OnceLock<ToolRuntime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        ToolRuntime::builder()
            .allocation(Allocation::OnDemand)
            .build()
            .expect("runtime")
    })
}

fn world_check(wasm: &[u8]) -> Result<(), String> {
    runtime().load(wasm).map(|_| ()).map_err(|e| e.to_string())
}

fn reference(registry: &Registry, repo: &str) -> ToolReference {
    ToolReference::parse(&format!("{}/{repo}:1", registry.addr)).expect("reference")
}

/// Pushes `wasm` as `repo:1` and returns the pinned reference.
fn push(registry: &Registry, repo: &str, wasm: &[u8]) -> ToolReference {
    let r = reference(registry, repo);
    let artifact = layout::artifact(wasm, "tool.wasm", &[], &[]);
    let client = RegistryClient::new(&r, RegistryOptions::default()).expect("client");
    let digest = block(client.push(&r, &artifact, wasm)).expect("push");
    r.pinned(&digest)
}

fn sign(r: &ToolReference, key: &PrivateKey, over: &str) {
    let digest = r.digest().expect("pinned");
    let payload = Payload::new(&r.repository_name(), over).to_bytes();
    let entry = SignatureEntry {
        signature: key.sign(&payload),
        payload,
    };
    let client = RegistryClient::new(r, RegistryOptions::default()).expect("client");
    block(client.push_signature(r, digest, &entry)).expect("push signature");
}

fn fetch(
    store: &ToolStore,
    r: &ToolReference,
    publishers: &Publishers,
    allow_unsigned: bool,
) -> Result<FetchedTool, DistributionError> {
    fetch_with(
        store,
        r,
        publishers,
        allow_unsigned,
        RegistryOptions::default(),
    )
}

fn fetch_with(
    store: &ToolStore,
    r: &ToolReference,
    publishers: &Publishers,
    allow_unsigned: bool,
    options: RegistryOptions,
) -> Result<FetchedTool, DistributionError> {
    let rule = TrustRule {
        publishers,
        allow_unsigned,
    };
    block(corral_distribution::fetch(
        store,
        &options,
        r,
        rule,
        &world_check,
    ))
}

fn acme() -> (PrivateKey, Publishers) {
    let key = PrivateKey::generate();
    let mut p = Publishers::none();
    p.add("acme", key.public());
    (key, p)
}

/// Files in the store, but for its empty scaffolding.
fn stored_files(dir: &Path) -> usize {
    ["blobs/sha256", "signatures", "tmp"]
        .iter()
        .map(|d| {
            std::fs::read_dir(dir.join(d))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_signed_tool_is_pulled_verified_stored_and_then_starts_with_the_registry_down() {
    let mut registry = Registry::start();
    let echo = component_bytes("echo");
    let r = push(&registry, "tools/echo", &echo);
    let (key, publishers) = acme();
    sign(&r, &key, r.digest().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = ToolStore::open(dir.path()).unwrap();

    let first = fetch(&store, &r, &publishers, false).expect("fetch");
    assert_eq!(first.publisher, "acme");
    assert_eq!(first.wasm, echo);
    assert!(!first.from_store);
    registry.stop();
    let again = fetch(&store, &r, &publishers, false).expect("from the store");
    assert!(again.from_store);
    assert_eq!(again.wasm, echo);
    // And the stored signature is checked again at every load.
    let (_, strangers) = acme();
    let err = fetch(&store, &r, &strangers, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("none by a listed publisher"), "{err}");
}

#[test]
fn a_tag_is_resolved_to_its_digest_and_said_so() {
    let registry = Registry::start();
    let pinned = push(&registry, "tools/echo", &component_bytes("echo"));
    let dir = tempfile::tempdir().unwrap();
    let store = ToolStore::open(dir.path()).unwrap();
    let got = fetch(
        &store,
        &reference(&registry, "tools/echo"),
        &Publishers::none(),
        true,
    )
    .expect("fetch");
    assert!(got.resolved_from_tag);
    assert_eq!(got.reference.digest(), pinned.digest());
    assert_eq!(got.publisher, "unsigned");
}

/// Fetches `r` and expects a refusal containing `expected`, with nothing
/// left in the store.
fn refused(r: &ToolReference, publishers: &Publishers, options: RegistryOptions, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = ToolStore::open(dir.path()).unwrap();
    let err = fetch_with(&store, r, publishers, false, options)
        .expect_err(expected)
        .to_string();
    assert!(err.contains(expected), "expected `{expected}` in: {err}");
    assert!(
        err.contains(&r.repository_name()),
        "names the reference: {err}"
    );
    assert_eq!(
        stored_files(dir.path()),
        0,
        "nothing is stored after: {err}"
    );
}

#[test]
fn a_blob_altered_in_the_registry_is_refused() {
    let registry = Registry::start();
    let echo = component_bytes("echo");
    let r = push(&registry, "tools/echo", &echo);
    let (key, publishers) = acme();
    sign(&r, &key, r.digest().unwrap());
    let mut altered = echo.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0xff;
    std::fs::write(registry.blob_file(&layout::digest_of(&echo)), &altered).unwrap();
    refused(&r, &publishers, RegistryOptions::default(), "hashes to");
}

/// Pushes a manifest that `edit` changed from the Wasm layout.
fn push_edited(registry: &Registry, edit: impl Fn(&mut serde_json::Value)) -> ToolReference {
    let r = reference(registry, "tools/odd");
    let wasm = component_bytes("echo");
    let mut artifact = layout::artifact(&wasm, "tool.wasm", &[], &[]);
    let mut manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
    edit(&mut manifest);
    artifact.manifest = serde_json::to_vec(&manifest).unwrap();
    artifact.digest = layout::digest_of(&artifact.manifest);
    let client = RegistryClient::new(&r, RegistryOptions::default()).unwrap();
    let digest = block(client.push(&r, &artifact, &wasm)).expect("push");
    r.pinned(&digest)
}

#[test]
fn manifests_outside_the_wasm_layout_and_oversized_tools_are_refused() {
    let registry = Registry::start();
    let (_, publishers) = acme();
    let tar = push_edited(&registry, |m| {
        m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into()
    });
    refused(
        &tar,
        &publishers,
        RegistryOptions::default(),
        "not `application/wasm`",
    );
    let two = push_edited(&registry, |m| {
        let layer = m["layers"][0].clone();
        m["layers"].as_array_mut().unwrap().push(layer);
    });
    refused(&two, &publishers, RegistryOptions::default(), "2 layers");
    let fine = push(&registry, "tools/echo", &component_bytes("echo"));
    let small = RegistryOptions {
        max_tool_bytes: 1024,
        ..RegistryOptions::default()
    };
    refused(&fine, &publishers, small, "over the cap");
}

#[test]
fn a_registry_that_is_down_or_answers_garbage_is_named() {
    let (_, publishers) = acme();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = ToolReference::parse(&format!("{free}/tools/echo:1")).unwrap();
    refused(
        &down,
        &publishers,
        RegistryOptions::default(),
        "could not be reached",
    );

    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = garbage.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in garbage.incoming().flatten().take(16) {
            let mut s = stream;
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 20\r\nConnection: close\r\n\r\n<html>nonsense</html");
        }
    });
    let r = ToolReference::parse(&format!("{addr}/tools/echo:1")).unwrap();
    refused(
        &r,
        &publishers,
        RegistryOptions::default(),
        "not an OCI image manifest",
    );
}

#[test]
fn missing_foreign_and_misplaced_signatures_are_refused() {
    let registry = Registry::start();
    let (key, publishers) = acme();
    let unsigned = push(&registry, "tools/echo", &component_bytes("echo"));
    refused(
        &unsigned,
        &publishers,
        RegistryOptions::default(),
        "no signature",
    );

    let stranger = PrivateKey::generate();
    let foreign = push(&registry, "tools/files", &component_bytes("files"));
    sign(&foreign, &stranger, foreign.digest().unwrap());
    refused(
        &foreign,
        &publishers,
        RegistryOptions::default(),
        "none by a listed publisher (acme)",
    );

    // acme's real signature of echo, copied onto http-get's signature tag.
    let moved = push(&registry, "tools/http-get", &component_bytes("http-get"));
    sign(&moved, &key, unsigned.digest().unwrap());
    refused(
        &moved,
        &publishers,
        RegistryOptions::default(),
        "over sha256:",
    );
}

#[test]
fn a_component_that_imports_outside_the_world_is_refused_before_it_is_stored() {
    let registry = Registry::start();
    let (key, publishers) = acme();
    let r = push(&registry, "tools/sneaky", &component_bytes("sneaky"));
    sign(&r, &key, r.digest().unwrap());
    refused(
        &r,
        &publishers,
        RegistryOptions::default(),
        "test:sneaky/backdoor",
    );
}

#[test]
fn a_tool_stored_unsigned_and_signed_later_is_trusted_after_asking_the_registry() {
    let registry = Registry::start();
    let (key, publishers) = acme();
    let r = push(&registry, "tools/echo", &component_bytes("echo"));
    let dir = tempfile::tempdir().unwrap();
    let store = ToolStore::open(dir.path()).unwrap();
    assert_eq!(
        fetch(&store, &r, &publishers, true).unwrap().publisher,
        "unsigned"
    );
    sign(&r, &key, r.digest().unwrap());
    let now = fetch(&store, &r, &publishers, false).expect("the new signature counts");
    assert!(now.from_store);
    assert_eq!(now.publisher, "acme");
}

#[test]
fn a_signature_made_for_one_repository_does_not_vouch_for_a_copy_in_another() {
    let registry = Registry::start();
    let (key, publishers) = acme();
    let echo = component_bytes("echo");
    let original = push(&registry, "tools/echo", &echo);
    let copy = push(&registry, "tools/copy", &echo);
    assert_eq!(original.digest(), copy.digest(), "the same artifact");
    // acme's signature of the original, pushed under the copy's tag.
    let digest = original.digest().unwrap();
    let payload = Payload::new(&original.repository_name(), digest).to_bytes();
    let entry = SignatureEntry {
        signature: key.sign(&payload),
        payload,
    };
    let client = RegistryClient::new(&copy, RegistryOptions::default()).unwrap();
    block(client.push_signature(&copy, digest, &entry)).unwrap();
    refused(
        &copy,
        &publishers,
        RegistryOptions::default(),
        "signed for that repository",
    );
}

#[test]
fn plain_http_is_only_for_loopback_unless_named() {
    let r = ToolReference::parse("registry.example:5000/tools/echo:1").unwrap();
    assert!(!r.is_loopback());
    // Nothing listens there; what matters is that the client would use TLS:
    // the error is a connection error, not a plain-HTTP exchange.
    let dir = tempfile::tempdir().unwrap();
    let store = ToolStore::open(dir.path()).unwrap();
    let (_, publishers) = acme();
    let err = fetch(&store, &r, &publishers, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("https://"), "{err}");
}
