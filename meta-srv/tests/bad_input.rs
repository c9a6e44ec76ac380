//! Every kind of bad input gets a clear gRPC status naming the problem, and the server
//! goes on serving a well-behaved node throughout.

mod common;

use common::{fast_options, start, FakeNode};
use common_proto::v1::{HeartbeatRequest, MailboxMessage, RegionRole, RegionStat};
use tonic::Code;

type Craft = Box<dyn FnOnce(&mut HeartbeatRequest)>;

/// Sends one crafted first message on a fresh stream and returns the status it gets.
async fn status_for(
    addr: std::net::SocketAddr,
    node_id: u64,
    craft: impl FnOnce(&mut HeartbeatRequest),
) -> tonic::Status {
    let mut node = FakeNode::connect(addr, node_id.max(1), 100).await;
    let mut req = node.request(&[]);
    craft(&mut req);
    node.send_and_wait(req).await.expect_err("must be rejected")
}

#[tokio::test]
async fn each_bad_input_gets_a_clear_status_and_others_keep_being_served() {
    let mut options = fast_options();
    options.max_message_bytes = 64 * 1024;
    let server = start(options).await;
    let mut good = FakeNode::connect(server.addr, 1000, 100).await;
    good.heartbeat(&[]).await.expect("good node served");

    let cases: Vec<(&str, Code, &str, Craft)> = vec![
        (
            "missing header",
            Code::InvalidArgument,
            "missing header",
            Box::new(|r| r.header = None),
        ),
        (
            "unspecified role",
            Code::InvalidArgument,
            "role is unspecified",
            Box::new(|r| r.header.as_mut().unwrap().role = 0),
        ),
        (
            "unknown role",
            Code::InvalidArgument,
            "unknown role value 42",
            Box::new(|r| r.header.as_mut().unwrap().role = 42),
        ),
        (
            "node id 0",
            Code::InvalidArgument,
            "node id 0",
            Box::new(|r| {
                r.header.as_mut().unwrap().node_id = 0;
                r.peer = None;
            }),
        ),
        (
            "wrong cluster",
            Code::InvalidArgument,
            "cluster id mismatch",
            Box::new(|r| r.header.as_mut().unwrap().cluster_id = 99),
        ),
        (
            "protocol version",
            Code::InvalidArgument,
            "unsupported protocol version 7",
            Box::new(|r| r.header.as_mut().unwrap().protocol_version = 7),
        ),
        (
            "peer mismatch",
            Code::InvalidArgument,
            "does not match header node id",
            Box::new(|r| r.peer.as_mut().unwrap().id = 5),
        ),
        (
            "region role unset",
            Code::InvalidArgument,
            "region 3 has an unspecified",
            Box::new(|r| {
                r.region_stats = vec![RegionStat {
                    region_id: 3,
                    ..Default::default()
                }];
            }),
        ),
        (
            "region twice",
            Code::InvalidArgument,
            "region 4 is reported twice",
            Box::new(|r| {
                let s = RegionStat {
                    region_id: 4,
                    role: RegionRole::Leader as i32,
                    ..Default::default()
                };
                r.region_stats = vec![s.clone(), s];
            }),
        ),
        (
            "missing peer",
            Code::InvalidArgument,
            "missing peer",
            Box::new(|r| r.peer = None),
        ),
        (
            "empty peer address",
            Code::InvalidArgument,
            "peer address is empty",
            Box::new(|r| r.peer.as_mut().unwrap().addr = " ".into()),
        ),
        (
            "oversized",
            Code::ResourceExhausted,
            "too large",
            Box::new(|r| {
                r.extensions.insert("blob".into(), "x".repeat(100 * 1024));
            }),
        ),
    ];
    for (i, (what, code, needle, craft)) in cases.into_iter().enumerate() {
        let status = status_for(server.addr, 1 + i as u64, craft).await;
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{what}: {:?}",
            status.message()
        );
        good.heartbeat(&[])
            .await
            .unwrap_or_else(|s| panic!("good node still served after {what}: {s:?}"));
    }
    assert!(
        server.srv.pushers().len() == 1,
        "no bad stream left a pusher"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_second_live_stream_with_another_epoch_is_refused_with_already_exists() {
    let server = start(fast_options()).await;
    let mut first = FakeNode::connect(server.addr, 5, 100).await;
    first.heartbeat(&[]).await.expect("first");
    let mut impostor = FakeNode::connect(server.addr, 5, 200).await;
    let status = impostor.heartbeat(&[]).await.expect_err("refused");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains("already connected"), "{status:?}");
    first
        .heartbeat(&[])
        .await
        .expect("the first stream is untouched");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_cannot_switch_node_id() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 6, 100).await;
    node.heartbeat(&[]).await.expect("first");
    let mut req = node.request(&[]);
    req.header.as_mut().expect("header").node_id = 7;
    req.peer.as_mut().expect("peer").id = 7;
    let status = node.send_and_wait(req).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("bound to node datanode-6"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reply_with_an_unknown_id_is_dropped_and_the_stream_goes_on() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 8, 100).await;
    node.heartbeat(&[]).await.expect("first");
    let bogus = MailboxMessage {
        id: 987_654,
        subject: "open_region_reply".into(),
        json: "{}".into(),
        ..Default::default()
    };
    let resp = node.reply(bogus, &[]).await;
    assert!(resp.header.expect("header").error.is_none());
    node.heartbeat(&[]).await.expect("still served");
    server.stop().await;
}
