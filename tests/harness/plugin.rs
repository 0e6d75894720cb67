//! An in-test provider plugin: a real tonic server of `v1alpha1.CSIDriverProvider` on
//! `<dir>/<name>.sock`, answering with whatever the test chose.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keymount::proto::provider::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use keymount::proto::provider::{
    Error as PbError, File, MountRequest, MountResponse, ObjectVersion, VersionRequest,
    VersionResponse,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// What the plugin answers to Mount.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// These files (path, mode, contents), one version per file ("v1").
    Files(Vec<(String, i32, Vec<u8>)>),
    /// These files and these versions.
    FilesVersions(Vec<(String, i32, Vec<u8>)>, Vec<(String, String)>),
    /// `MountResponse.error.code` set.
    ErrorCode(String),
    /// A gRPC error.
    Status(tonic::Code, String),
    /// Never answers.
    Hang,
    /// Files but no object versions.
    NoVersions,
    /// Wait, then answer with the inner reply.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    /// Shorthand: files with mode 0644.
    pub(crate) fn files(files: &[(&str, &str)]) -> Self {
        Self::Files(
            files
                .iter()
                .map(|(p, c)| (p.to_string(), 0o644, c.as_bytes().to_vec()))
                .collect(),
        )
    }
}

#[derive(Debug)]
struct State {
    reply: Reply,
    mounts: usize,
    requests: Vec<MountRequest>,
}

#[derive(Debug, Clone)]
struct Service(Arc<Mutex<State>>);

#[tonic::async_trait]
impl CsiDriverProvider for Service {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        assert_eq!(request.into_inner().version, "v1alpha1");
        Ok(Response::new(VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "test-plugin".into(),
            runtime_version: "0.0.1".into(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let reply = {
            let mut state = self.0.lock().unwrap();
            state.mounts += 1;
            state.requests.push(request.into_inner());
            state.reply.clone()
        };
        answer(reply).await
    }
}

async fn answer(reply: Reply) -> Result<Response<MountResponse>, Status> {
    let mut reply = reply;
    loop {
        return match reply {
            Reply::Delay(wait, inner) => {
                tokio::time::sleep(wait).await;
                reply = *inner;
                continue;
            }
            Reply::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Reply::Status(code, message) => Err(Status::new(code, message)),
            Reply::ErrorCode(code) => Ok(Response::new(MountResponse {
                object_version: vec![ObjectVersion {
                    id: "x".into(),
                    version: "1".into(),
                }],
                error: Some(PbError { code }),
                files: Vec::new(),
            })),
            Reply::NoVersions => Ok(Response::new(MountResponse {
                object_version: Vec::new(),
                error: None,
                files: vec![File {
                    path: "a".into(),
                    mode: 0o644,
                    contents: b"x".to_vec(),
                }],
            })),
            Reply::Files(files) => {
                let versions = files
                    .iter()
                    .map(|(p, _, _)| (p.clone(), "v1".to_string()))
                    .collect();
                reply = Reply::FilesVersions(files, versions);
                continue;
            }
            Reply::FilesVersions(files, versions) => Ok(Response::new(MountResponse {
                object_version: versions
                    .into_iter()
                    .map(|(id, version)| ObjectVersion { id, version })
                    .collect(),
                error: None,
                files: files
                    .into_iter()
                    .map(|(path, mode, contents)| File {
                        path,
                        mode,
                        contents,
                    })
                    .collect(),
            })),
        };
    }
}

/// A running plugin; stops when dropped.
#[derive(Debug)]
pub(crate) struct FakePlugin {
    pub(crate) socket: PathBuf,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl FakePlugin {
    /// Serves plugin `name` in `dir`.
    pub(crate) async fn start(dir: &Path, name: &str, reply: Reply) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(State {
            reply,
            mounts: 0,
            requests: Vec::new(),
        }));
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(CsiDriverProviderServer::new(Service(state.clone())))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Self {
            socket,
            state,
            stop,
        }
    }

    /// Changes the answer for later calls.
    pub(crate) fn set_reply(&self, reply: Reply) {
        self.state.lock().unwrap().reply = reply;
    }

    /// Mount calls received so far.
    pub(crate) fn mount_calls(&self) -> usize {
        self.state.lock().unwrap().mounts
    }

    /// Mount requests received so far about pod `name` (its `csi.storage.k8s.io/pod.name`
    /// attribute).
    pub(crate) fn mount_calls_for_pod(&self, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| {
                serde_json::from_str::<serde_json::Value>(&r.attributes)
                    .is_ok_and(|a| a["csi.storage.k8s.io/pod.name"] == name)
            })
            .count()
    }

    /// The last Mount request received.
    pub(crate) fn last_request(&self) -> Option<MountRequest> {
        self.state.lock().unwrap().requests.last().cloned()
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}
