//! The supervisor's decisions, against a fake engine and exact clocks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral_sandbox::{
    ContainerBackend, ContainerInfo, ContainerSpec, Event, LifecyclePolicy, Limits, SandboxError,
    Supervisor,
};

#[derive(Default)]
struct FakeEngine {
    containers: Mutex<BTreeMap<String, ContainerInfo>>,
    next: Mutex<u32>,
}

impl FakeEngine {
    fn set(&self, id: &str, f: impl FnOnce(&mut ContainerInfo)) {
        f(self
            .containers
            .lock()
            .unwrap()
            .get_mut(id)
            .expect("container"));
    }
    fn ids(&self) -> Vec<String> {
        self.containers.lock().unwrap().keys().cloned().collect()
    }
    fn add(&self, agent: &str, image: &str, running: bool) -> String {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        let id = format!("c{n}");
        self.containers.lock().unwrap().insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                agent: agent.into(),
                image: image.into(),
                running,
                exit_code: None,
                oom_killed: false,
            },
        );
        id
    }
}

impl ContainerBackend for FakeEngine {
    async fn create(&self, spec: &ContainerSpec) -> Result<String, SandboxError> {
        Ok(self.add(&spec.agent, &spec.image, false))
    }
    async fn start(&self, _agent: &str, id: &str) -> Result<(), SandboxError> {
        self.set(id, |c| c.running = true);
        Ok(())
    }
    async fn stop(&self, _agent: &str, id: &str, _grace: i32) -> Result<(), SandboxError> {
        self.set(id, |c| {
            c.running = false;
            c.exit_code = Some(143);
        });
        Ok(())
    }
    async fn remove(&self, _agent: &str, id: &str) -> Result<(), SandboxError> {
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }
    async fn inspect(&self, agent: &str, id: &str) -> Result<ContainerInfo, SandboxError> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::Engine {
                agent: agent.to_string(),
                action: "inspect its container",
                message: format!("no such container: {id}"),
            })
    }
    async fn list(&self) -> Result<Vec<ContainerInfo>, SandboxError> {
        Ok(self.containers.lock().unwrap().values().cloned().collect())
    }
    async fn logs(&self, _agent: &str, _id: &str) -> Result<(String, String), SandboxError> {
        Ok(Default::default())
    }
}

fn spec(agent: &str) -> ContainerSpec {
    ContainerSpec {
        agent: agent.into(),
        image: "corral-agent:v1".into(),
        workspace: "/w".into(),
        socket_dir: "/s".into(),
        user: "10001:10001".into(),
        limits: Limits::default(),
        command: vec![],
        extra_mounts: vec![],
    }
}

const S: Duration = Duration::from_secs(1);

fn policy() -> LifecyclePolicy {
    LifecyclePolicy {
        idle_timeout: 60 * S,
        backoff_initial: S,
        backoff_max: 8 * S,
        healthy_after: 30 * S,
        stop_grace_secs: 1,
    }
}

fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn starts_on_demand_and_stops_when_idle() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(FakeEngine::default(), policy(), vec![spec("a")], t0);
    block(async {
        assert!(
            sup.container("a").is_none(),
            "nothing runs before it is needed"
        );
        let (id, event) = sup.ensure_running("a", t0).await.unwrap();
        assert_eq!(
            event,
            Some(Event::Started {
                agent: "a".into(),
                id: id.clone()
            })
        );
        let (again, event) = sup.ensure_running("a", t0 + S).await.unwrap();
        assert_eq!((again.as_str(), event), (id.as_str(), None));

        assert!(sup.tick(t0 + 50 * S).await.unwrap().is_empty());
        sup.touch("a", t0 + 50 * S);
        assert!(
            sup.tick(t0 + 100 * S).await.unwrap().is_empty(),
            "used 50 s ago: not idle"
        );
        let events = sup.tick(t0 + 111 * S).await.unwrap();
        assert_eq!(events, [Event::StoppedIdle { agent: "a".into() }]);
        assert!(sup.backend().ids().is_empty(), "stopped and removed");
        assert!(sup.ensure_running("nobody", t0).await.is_err());
    });
}

#[test]
fn each_agent_keeps_its_own_idle_timeout_and_stop_all_clears_everything() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(
        FakeEngine::default(),
        policy(),
        vec![spec("quick"), spec("patient")],
        t0,
    );
    sup.set_idle_timeout("quick", 10 * S);
    block(async {
        sup.ensure_running("quick", t0).await.unwrap();
        sup.ensure_running("patient", t0).await.unwrap();
        let events = sup.tick(t0 + 11 * S).await.unwrap();
        assert_eq!(
            events,
            [Event::StoppedIdle {
                agent: "quick".into()
            }]
        );
        assert!(
            sup.container("patient").is_some(),
            "the policy's 60 s still apply"
        );
        sup.stop_all().await.unwrap();
        assert!(sup.container("patient").is_none());
        assert!(sup.backend().ids().is_empty(), "stopped and removed");
    });
}

#[test]
fn a_container_removed_behind_its_back_is_forgotten_and_started_afresh() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(
        FakeEngine::default(),
        policy(),
        vec![spec("a"), spec("b")],
        t0,
    );
    block(async {
        let (first, _) = sup.ensure_running("a", t0).await.unwrap();
        sup.ensure_running("b", t0).await.unwrap();
        // Someone runs `docker rm -f` on it.
        ContainerBackend::remove(sup.backend(), "a", &first)
            .await
            .unwrap();
        let events = sup.tick(t0 + S).await.unwrap();
        assert!(
            matches!(&events[..], [Event::Removed { id, .. }] if *id == first),
            "{events:?}"
        );
        assert!(sup.container("b").is_some(), "the other agent is untouched");
        let (second, event) = sup.ensure_running("a", t0 + 2 * S).await.unwrap();
        assert_ne!(second, first);
        assert!(event.is_some());
        assert!(sup.stop("a").await.unwrap(), "an operator's stop");
        assert!(!sup.stop("a").await.unwrap(), "nothing left to stop");
        assert!(sup.stop("nobody").await.is_err());
    });
}

#[test]
fn a_crash_restarts_with_doubling_backoff_and_a_clean_exit_does_not() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(FakeEngine::default(), policy(), vec![spec("a")], t0);
    block(async {
        let mut now = t0;
        let mut waits = Vec::new();
        let (mut id, _) = sup.ensure_running("a", now).await.unwrap();
        for _ in 0..5 {
            sup.backend().set(&id, |c| {
                c.running = false;
                c.exit_code = Some(137);
                c.oom_killed = true;
            });
            let events = sup.tick(now).await.unwrap();
            let Event::Crashed {
                restart_in,
                oom_killed,
                ..
            } = events[0].clone()
            else {
                panic!("{events:?}")
            };
            assert!(oom_killed);
            waits.push(restart_in);
            assert!(
                sup.tick(now + restart_in - Duration::from_millis(1))
                    .await
                    .unwrap()
                    .is_empty(),
                "not before the backoff"
            );
            now += restart_in;
            let events = sup.tick(now).await.unwrap();
            let Event::Restarted { id: new_id, .. } = events[0].clone() else {
                panic!("{events:?}")
            };
            id = new_id;
        }
        assert_eq!(waits, [S, 2 * S, 4 * S, 8 * S, 8 * S]);

        // Healthy for long enough: the next crash starts from the first wait.
        sup.touch("a", now + 31 * S);
        sup.tick(now + 31 * S).await.unwrap();
        sup.backend().set(&id, |c| {
            c.running = false;
            c.exit_code = Some(1);
        });
        let events = sup.tick(now + 32 * S).await.unwrap();
        assert!(
            matches!(events[0], Event::Crashed { restart_in, .. } if restart_in == S),
            "{events:?}"
        );
    });

    let mut sup = Supervisor::new(FakeEngine::default(), policy(), vec![spec("b")], t0);
    block(async {
        let (id, _) = sup.ensure_running("b", t0).await.unwrap();
        sup.backend().set(&id, |c| {
            c.running = false;
            c.exit_code = Some(0);
        });
        assert_eq!(
            sup.tick(t0).await.unwrap(),
            [Event::Exited { agent: "b".into() }]
        );
        assert!(
            sup.tick(t0 + 100 * S).await.unwrap().is_empty(),
            "a clean exit is not restarted"
        );
    });
}

#[test]
fn reconcile_adopts_what_matches_and_removes_the_rest() {
    let t0 = Instant::now();
    let engine = FakeEngine::default();
    let keep = engine.add("a", "corral-agent:v1", true);
    let stale = engine.add("b", "corral-agent:v0", true);
    let stopped = engine.add("c", "corral-agent:v1", false);
    let ghost = engine.add("ghost", "corral-agent:v1", true);
    let twin = engine.add("a", "corral-agent:v1", true);
    let mut sup = Supervisor::new(engine, policy(), vec![spec("a"), spec("b"), spec("c")], t0);
    let events = block(sup.reconcile(t0)).unwrap();
    assert_eq!(
        events[0],
        Event::Adopted {
            agent: "a".into(),
            id: keep.clone()
        }
    );
    let removed: Vec<(String, String)> = events[1..]
        .iter()
        .map(|e| match e {
            Event::Removed { id, why } => (id.clone(), why.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let why = |id: &str| {
        removed
            .iter()
            .find(|(r, _)| r == id)
            .map(|(_, w)| w.clone())
            .unwrap()
    };
    assert!(why(&stale).contains("runs image corral-agent:v0"));
    assert!(why(&stopped).contains("not running"));
    assert!(why(&ghost).contains("not in the configuration"));
    assert!(why(&twin).contains("already has a container"));
    assert_eq!(sup.backend().ids(), std::slice::from_ref(&keep));
    assert_eq!(sup.container("a"), Some(keep.as_str()));
}
