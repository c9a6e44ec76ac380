//! The mailbox over real streams: request/reply, timeout, not found, disconnect,
//! broadcast, and late or bogus replies.

mod common;

use std::time::Duration;

use common::{fast_options, start, within, FakeNode};
use common_proto::instruction::OpenRole;
use common_proto::v1::Role;
use common_proto::{Instruction, InstructionReply, JsonPayload, RegionIdent, RegionReply};
use handlers::NodeKey;
use meta_srv::Error;

fn open(region_id: u64) -> Instruction {
    Instruction::OpenRegion {
        region_id,
        role: OpenRole::Leader,
        epoch: 1,
    }
}

#[tokio::test]
async fn a_reply_is_matched_to_its_sender_by_id() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    node.heartbeat(&[]).await.expect("registered");

    let mailbox = server.srv.mailbox();
    let rx1 = mailbox
        .send(NodeKey::datanode(1), &open(10), Duration::from_secs(5))
        .expect("sent");
    let rx2 = mailbox
        .send(NodeKey::datanode(1), &open(11), Duration::from_secs(5))
        .expect("sent");
    let m1 = node.next_mailbox().await;
    let m2 = node.next_mailbox().await;
    assert_ne!(m1.id, m2.id);
    assert_ne!(m1.id, 0, "id 0 is reserved for one-way");
    assert_eq!(
        Instruction::from_mailbox_message(&m2).expect("decode"),
        open(11)
    );

    // Reply out of order: each reply reaches its own sender.
    let reply = |region_id| {
        InstructionReply::OpenRegion(RegionReply {
            region_id,
            ok: true,
            error: None,
        })
    };
    node.reply(
        reply(11)
            .to_mailbox_message(m2.id, "dn", "ms")
            .expect("enc"),
        &[],
    )
    .await;
    node.reply(
        reply(10)
            .to_mailbox_message(m1.id, "dn", "ms")
            .expect("enc"),
        &[],
    )
    .await;
    assert_eq!(within("reply 11", rx2).await.expect("reply"), reply(11));
    assert_eq!(within("reply 10", rx1).await.expect("reply"), reply(10));
    assert_eq!(mailbox.pending_len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn an_unanswered_message_times_out_and_a_late_reply_is_dropped() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    node.heartbeat(&[]).await.expect("registered");
    let mailbox = server.srv.mailbox();
    let rx = mailbox
        .send(NodeKey::datanode(1), &open(1), Duration::from_millis(200))
        .expect("sent");
    let msg = node.next_mailbox().await;
    // The 200 ms timeout must fire well inside the outer deadline (a timeout read in the
    // wrong unit fails here instead of waiting it out).
    let err = within("the mailbox timeout", rx)
        .await
        .expect_err("no reply");
    assert!(matches!(err, Error::MailboxTimeout { .. }), "{err}");
    assert_eq!(mailbox.pending_len(), 0, "no entry leaked");

    // The late reply is logged and dropped; the stream keeps working.
    let late = InstructionReply::OpenRegion(RegionReply {
        region_id: 1,
        ok: true,
        error: None,
    });
    let resp = node
        .reply(
            late.to_mailbox_message(msg.id, "dn", "ms").expect("enc"),
            &[],
        )
        .await;
    assert!(resp.header.expect("header").error.is_none());
    server.stop().await;
}

#[tokio::test]
async fn sending_to_an_unknown_node_fails_with_pusher_not_found() {
    let server = start(fast_options()).await;
    let err = server
        .srv
        .mailbox()
        .send(NodeKey::datanode(42), &open(1), Duration::from_secs(1))
        .expect_err("no node");
    assert!(matches!(err, Error::PusherNotFound { .. }), "{err}");
    assert_eq!(server.srv.mailbox().pending_len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_disconnect_fails_waiting_messages_with_channel_closed() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    node.heartbeat(&[]).await.expect("registered");
    let rx = server
        .srv
        .mailbox()
        .send(NodeKey::datanode(1), &open(1), Duration::from_secs(30))
        .expect("sent");
    node.next_mailbox().await;
    drop(node);
    let err = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("fails before its timeout")
        .expect_err("closed");
    assert!(matches!(err, Error::ChannelClosed { .. }), "{err}");
    assert_eq!(server.srv.mailbox().pending_len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn broadcast_reaches_every_node_of_the_role_one_way() {
    let server = start(fast_options()).await;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut n = FakeNode::connect(server.addr, id, 100).await;
        n.heartbeat(&[]).await.expect("registered");
        nodes.push(n);
    }
    let mut frontend = FakeNode::connect_as(server.addr, 9, Role::Frontend, 100).await;
    frontend.heartbeat(&[]).await.expect("registered");

    let ins = Instruction::CloseRegion(RegionIdent { region_id: 5 });
    let reached = server
        .srv
        .mailbox()
        .broadcast(Role::Datanode, &ins)
        .expect("broadcast");
    assert_eq!(reached, 3);
    for n in &mut nodes {
        let msg = n.next_mailbox().await;
        assert_eq!(msg.id, 0, "broadcasts are one-way");
        assert_eq!(
            Instruction::from_mailbox_message(&msg).expect("decode"),
            ins
        );
    }
    // The frontend got nothing: its next response is its own heartbeat's.
    let resp = frontend.heartbeat(&[]).await.expect("ok");
    assert!(resp.mailbox_message.is_none());
    server
        .srv
        .mailbox()
        .send_oneway(NodeKey::datanode(1), &ins)
        .expect("one-way");
    assert_eq!(nodes[0].next_mailbox().await.id, 0);
    assert_eq!(server.srv.mailbox().pending_len(), 0);
    server.stop().await;
}
