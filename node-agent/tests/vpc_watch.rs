//! The agent's `WatchNetwork` follower (`client::network_loop`) against a
//! fake Node API server: UNIMPLEMENTED (a control plane that does not serve
//! it yet) means "no view", asked again with back-off; then the views of
//! the stream are kept (in `<state_dir>/vpc.json`) and applied, an older
//! revision in between is ignored. Runs in a private network namespace (the
//! data plane applies what the views say there).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{have_prereqs, Env};
use nubis_agent::context::HostContext;
use nubis_proto::node::v1 as pb;
use pb::node_server::{Node, NodeServer};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Answers WatchNetwork with UNIMPLEMENTED the first time, then with the
/// views sent into `views`; everything else is unimplemented.
struct Fake {
    calls: AtomicUsize,
    views: Mutex<Option<mpsc::Receiver<Result<pb::NetworkView, Status>>>>,
}

#[tonic::async_trait]
impl Node for Fake {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type WatchAssignmentsStream = Stream<pb::AssignmentEvent>;
    async fn watch_assignments(
        &self,
        _: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn report_instance(
        &self,
        _: Request<pb::ReportInstanceRequest>,
    ) -> Result<Response<pb::ReportInstanceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn report_console(
        &self,
        _: Request<pb::ReportConsoleRequest>,
    ) -> Result<Response<pb::ReportConsoleResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type WatchNetworkStream = Stream<pb::NetworkView>;
    async fn watch_network(
        &self,
        req: Request<pb::WatchNetworkRequest>,
    ) -> Result<Response<Self::WatchNetworkStream>, Status> {
        assert_eq!(req.get_ref().node_id, "node-1");
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Status::unimplemented("WatchNetwork is not served yet"));
        }
        let rx = self.views.lock().unwrap().take().expect("one stream");
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn view(revision: i64) -> pb::NetworkView {
    pb::NetworkView {
        revision,
        vpcs: vec![pb::VpcView {
            vpc_id: "vpc-1".into(),
            vni: 0x77,
            cidr: "10.0.0.0/16".into(),
            ..Default::default()
        }],
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn views_follow_the_stream_after_unimplemented() {
    if !have_prereqs(false) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        std::mem::forget(rx);
        let ctx: Arc<HostContext> = HostContext::new(env.config.clone(), tx).unwrap();
        let (views_tx, views_rx) = mpsc::channel(8);
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            views: Mutex::new(Some(views_rx)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = fake.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(NodeServer::from_arc(served))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let channel = nubis_proto::transport::connect(&format!("http://{addr}"))
            .await
            .unwrap();
        let client = pb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(
            channel,
            nubis_proto::auth::Credentials::new("AKIDNODE", "secret"),
        ));
        let follower = tokio::spawn(nubis_agent::client::network_loop(
            ctx.clone(),
            client,
            "node-1".into(),
        ));

        // UNIMPLEMENTED: no view; asked again (after the 1 s back-off).
        until("the second WatchNetwork", || {
            fake.calls.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(ctx.vpc.status().view_revision, None);

        views_tx.send(Ok(view(3))).await.unwrap();
        until("view 3", || ctx.vpc.status().view_revision == Some(3)).await;
        let kept = std::fs::read_to_string(env.state.path().join("vpc.json")).unwrap();
        assert!(kept.contains("\"revision\": 3"), "{kept}");
        // An older view is ignored, a newer one taken.
        views_tx.send(Ok(view(2))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ctx.vpc.status().view_revision, Some(3), "older view taken");
        views_tx.send(Ok(view(5))).await.unwrap();
        until("view 5", || ctx.vpc.status().view_revision == Some(5)).await;
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "one stream was enough"
        );
        // No instance here: nothing was set up for the view's VPC.
        let st = ctx.vpc.status();
        assert_eq!((st.vpcs, st.ports, st.last_error), (0, 0, None));
        follower.abort();
    });
}
