//! A real node for end-to-end tests: containerd, kubelet and kube-scheduler v1.20.2 next to the
//! test API server (`scripts/testbed/node-up.sh`), with keymount's image and the test box image
//! built by `scripts/image` and imported into the node's containerd.
//!
//! One node per test process, started on first use and stopped (with every host path and
//! sysctl kubelet changed restored) by a watchdog once the process exits. The node is named
//! `localhost` and tainted `keymount.dev/test-node:NoSchedule`: pods of node tests tolerate it
//! ([`TestNode::pod`]). No CNI: every pod runs with `hostNetwork: true`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::kube::TestKube;
use super::proc::{repo_root, wait_until};

/// The node's taint; pods that may run on the test node tolerate it.
pub(crate) const TAINT: &str = "keymount.dev/test-node";

/// Handle on the test node (shared by the tests of a binary).
#[derive(Debug)]
pub(crate) struct TestNode {
    /// Node name (`localhost`).
    pub(crate) name: String,
    /// `DIR/node`: logs, configs, pid files.
    pub(crate) dir: PathBuf,
    /// kubelet's `--root-dir` (the chart's `linux.kubeletRootDir`).
    pub(crate) root_dir: PathBuf,
    /// containerd's socket.
    pub(crate) containerd: PathBuf,
    keymount_image: Option<String>,
    /// Image reference of the test box (busybox shell; default command sleeps).
    pub(crate) testbox_image: String,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

static NODE: OnceLock<TestNode> = OnceLock::new();

/// An image `scripts/image` built: name, reference, archive.
struct Built {
    name: String,
    reference: String,
    archive: PathBuf,
}

fn stderr_line(msg: &str) {
    // Straight to stderr (not eprintln!, which the test harness captures).
    let _ = writeln!(std::io::stderr(), "{msg}");
}

impl TestNode {
    /// The node (started on first use). Panics with the reason when it cannot start, e.g.
    /// containerd or the kubelet build missing: node tests never skip silently.
    pub(crate) fn get() -> &'static TestNode {
        NODE.get_or_init(|| {
            let kube = TestKube::get();
            let root = repo_root();
            let started = Instant::now();

            let images = build_images(&root);
            let image = |name: &str| {
                images
                    .iter()
                    .find(|b| b.name == name)
                    .unwrap_or_else(|| panic!("scripts/image printed no `{name}` line"))
            };
            let testbox = image("testbox");
            let out = Command::new(root.join("scripts/testbed/node-up.sh"))
                .arg(kube.dir())
                .env("KEYMOUNT_TESTBED_OWNER_PID", std::process::id().to_string())
                .env("KEYMOUNT_NODE_SANDBOX_IMAGE", &testbox.reference)
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/testbed/node-up.sh");
            assert!(
                out.status.success(),
                "scripts/testbed/node-up.sh {} failed ({}); see its message above",
                kube.dir().display(),
                out.status
            );
            let env_file = PathBuf::from(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim(),
            );
            let env = read_env(&env_file);
            let var = |k: &str| {
                env.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{} has no {k}", env_file.display()))
            };
            let containerd = PathBuf::from(var("KEYMOUNT_NODE_CONTAINERD"));
            for built in &images {
                let out = Command::new("ctr")
                    .arg("--address")
                    .arg(&containerd)
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(&built.archive)
                    .output()
                    .expect("run ctr images import");
                assert!(
                    out.status.success(),
                    "ctr images import {} failed: {}",
                    built.archive.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let node = TestNode {
                name: var("KEYMOUNT_NODE_NAME"),
                dir: PathBuf::from(var("KEYMOUNT_NODE_DIR")),
                root_dir: PathBuf::from(var("KEYMOUNT_NODE_ROOT_DIR")),
                containerd,
                keymount_image: images
                    .iter()
                    .find(|b| b.name == "keymount")
                    .map(|b| b.reference.clone()),
                testbox_image: testbox.reference.clone(),
                kubeconfig: kube.kubeconfig_path().to_path_buf(),
                kubectl: find_kubectl(),
            };
            stderr_line(&format!(
                "test node `{}` ready in {:.0?} (logs in {})",
                node.name,
                started.elapsed(),
                node.dir.display()
            ));
            node
        })
    }

    /// Image reference of keymount's image (imported; use `imagePullPolicy: Never`).
    pub(crate) fn keymount_image(&self) -> &str {
        self.keymount_image.as_deref().expect(
            "keymount's image was not built: KEYMOUNT_TEST_IMAGES has no keymount entry \
             (run scripts/image, or unset KEYMOUNT_TEST_IMAGES)",
        )
    }

    /// `kubectl --kubeconfig=<admin> ARGS` (a kubectl of the machine's Cloud SDK or PATH).
    pub(crate) fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.kubectl.display()))
    }

    /// `kubectl ARGS`: stdout and stderr as text (for failure messages).
    pub(crate) fn kubectl_text(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Restarts the node's kubelet (`scripts/testbed/node-restart-kubelet.sh`): pods,
    /// containers and mounts stay; returns once its healthz answers again.
    pub(crate) fn restart_kubelet(&self) {
        let kube_dir = self.dir.parent().expect("DIR/node");
        let out = Command::new(repo_root().join("scripts/testbed/node-restart-kubelet.sh"))
            .arg(kube_dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/testbed/node-restart-kubelet.sh");
        assert!(
            out.status.success(),
            "node-restart-kubelet.sh failed ({}):\n{}",
            out.status,
            self.log_tail("kubelet", 30)
        );
    }

    /// Tags image `from` as `to` in the node's containerd (a new image reference for the same
    /// content, as a registry tag would be).
    pub(crate) fn tag_image(&self, from: &str, to: &str) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd)
            .args(["-n", "k8s.io", "images", "tag", "--force", from, to])
            .output()
            .expect("run ctr images tag");
        assert!(
            out.status.success(),
            "ctr images tag {from} {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl exec` of `cmd` in `pod`'s first container; its stdout, or an error with stderr.
    pub(crate) fn exec(&self, ns: &str, pod: &str, cmd: &[&str]) -> Result<String, String> {
        let mut args = vec!["exec", "-n", ns, pod, "--"];
        args.extend_from_slice(cmd);
        let out = self.kubectl(&args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl exec {ns}/{pod} {cmd:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A hostNetwork pod of the test box on this node (tolerating its taint): the default
    /// command sleeps. `spec` is merged over the generated spec (its `containers[0]` over the
    /// generated container).
    pub(crate) fn pod(&self, ns: &str, name: &str, spec: Value) -> Value {
        let mut container = json!({
            "name": "app",
            "image": self.testbox_image,
            "imagePullPolicy": "Never",
        });
        let mut spec = spec;
        if let Some(c) = spec
            .get_mut("containers")
            .and_then(|c| c.as_array_mut())
            .and_then(|c| c.first_mut())
        {
            merge(&mut container, c.take());
        }
        let mut full = json!({
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 2,
            "tolerations": [{"key": TAINT, "operator": "Exists"}],
            "nodeSelector": {"kubernetes.io/hostname": self.name},
        });
        if let Some(obj) = spec.as_object_mut() {
            obj.remove("containers");
        }
        merge(&mut full, spec);
        full["containers"] = json!([container]);
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": full,
        })
    }

    /// Creates `pod` and waits until it is Running (or panics with its status and events).
    pub(crate) async fn run_pod(
        &self,
        client: &kube::Client,
        pod: &Value,
        timeout: Duration,
    ) -> Pod {
        let ns = pod["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
        api.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
        self.wait_running(client, &ns, &name, timeout).await
    }

    /// Waits until pod `ns/name` is Running with every container ready to be exec'd into.
    pub(crate) async fn wait_running(
        &self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Pod {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let running = wait_until(timeout, || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|p| p.status)
                    .is_some_and(|s| {
                        s.phase.as_deref() == Some("Running")
                            && s.container_statuses
                                .unwrap_or_default()
                                .iter()
                                .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
                    })
            }
        })
        .await;
        if !running {
            panic!(
                "pod {ns}/{name} not Running within {timeout:?}:\n{}",
                self.describe(ns, name)
            );
        }
        api.get(name).await.expect("get running pod")
    }

    /// Deletes pod `ns/name` and waits until it is gone (kubelet tore it down). kubelet 1.20
    /// may confirm the deletion only at its next pod sync, a minute after the containers died.
    pub(crate) async fn delete_pod(
        &self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let _ = api.delete(name, &DeleteParams::default()).await;
        let gone = wait_until(timeout, || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)) }
        })
        .await;
        assert!(
            gone,
            "pod {ns}/{name} not gone within {timeout:?}:\n{}",
            self.describe(ns, name)
        );
    }

    /// `kubectl describe pod` (status and events), for failure messages.
    pub(crate) fn describe(&self, ns: &str, name: &str) -> String {
        self.kubectl_text(&["describe", "pod", "-n", ns, name])
    }

    /// The last lines of one of the node's logs (`kubelet`, `containerd`, `kube-scheduler`).
    pub(crate) fn log_tail(&self, which: &str, lines: usize) -> String {
        super::proc::tail(&self.dir.join(format!("{which}.log")), lines)
    }
}

/// Runs `scripts/image` (cached: a warm run rebuilds nothing) unless `KEYMOUNT_TEST_IMAGES`
/// names the archives already (`name=ref=archive,…`, as `scripts/test` may pass them).
fn build_images(root: &Path) -> Vec<Built> {
    let lines = match std::env::var("KEYMOUNT_TEST_IMAGES") {
        Ok(v) if !v.is_empty() => v.split(',').map(|s| s.replace('=', " ")).collect(),
        _ => {
            stderr_line(
                "test node: building the images (scripts/image; cached after the first run)",
            );
            let out = Command::new(root.join("scripts/image"))
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/image");
            assert!(
                out.status.success(),
                "scripts/image failed ({}); see its message above",
                out.status
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        }
    };
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some(Built {
                name: parts.next()?.to_string(),
                reference: parts.next()?.to_string(),
                archive: PathBuf::from(parts.next()?),
            })
        })
        .collect()
}

fn read_env(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// kubectl: `KEYMOUNT_TEST_KUBECTL`, `kubectl` on PATH, or the oldest versioned one of the
/// Cloud SDK (closest to the v1.20 server).
fn find_kubectl() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYMOUNT_TEST_KUBECTL") {
        return PathBuf::from(p);
    }
    let sdk = Path::new("/usr/lib/google-cloud-sdk/bin");
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(sdk)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("kubectl.1."))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("kubectl.1."))
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    if let Some(p) = versioned.into_iter().next() {
        return p;
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!(
        "no kubectl: set KEYMOUNT_TEST_KUBECTL, put kubectl on PATH, or install the Cloud SDK's \
         kubectl (1.27-1.33) under /usr/lib/google-cloud-sdk/bin"
    )
}

/// Merges `patch` into `base` (objects key by key, anything else replaced).
pub(crate) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}
