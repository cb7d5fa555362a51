//! Extra mounts end to end: screened by the sandbox, then decided by the
//! real policy engine's `mount` action; read-only unless granted.

use corral_policy::{Common, EngineSources, PolicyEngine, read_entities};
use corral_sandbox::{MountError, screen_mount};
use corral_tests::broker::copy_policies;

#[test]
fn a_mount_needs_the_screen_and_a_permit_and_is_read_only_unless_granted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("datasets");
    std::fs::create_dir_all(&data).unwrap();
    let data = data.canonicalize().unwrap();
    let policies = dir.path().join("policies");
    copy_policies(&policies);
    // Only the mount policy: the starter policies name tool actions, which
    // come from components this test does not load.
    std::fs::remove_file(policies.join("corral.cedar")).unwrap();
    std::fs::write(
        policies.join("mounts.cedar"),
        format!(
            r#"@id("reporter-reads-datasets")
permit (principal == Agent::"reporter", action == Action::"mount", resource == HostPath::"{}")
when {{ !context.writable }};"#,
            data.display()
        ),
    )
    .unwrap();
    let engine = PolicyEngine::load(&EngineSources {
        schema_file: policies.join("schema.cedarschema"),
        policy_dir: policies.clone(),
        tools: Vec::new(),
        entities: read_entities(&policies.join("entities.json")).unwrap(),
    })
    .unwrap();
    let common = Common::now("s", 0);

    let mount = screen_mount(&data, "/data", false).unwrap();
    let path = mount.host_path.display().to_string();
    let d = engine.decide_mount("reporter", &path, false, &common);
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, ["reporter-reads-datasets"]);
    assert!(mount.bind().ends_with(":/data:ro"));

    assert!(
        !engine
            .decide_mount("reporter", &path, true, &common)
            .allowed,
        "writable was not granted"
    );
    assert!(
        !engine
            .decide_mount("assistant", &path, false, &common)
            .allowed,
        "another agent"
    );

    // A blocked path never reaches the policies, whatever they say.
    std::fs::create_dir_all(data.join(".aws")).unwrap();
    assert!(matches!(
        screen_mount(&data, "/data", false),
        Err(MountError::Blocked { .. })
    ));
}
