//! The admin HTTP API against a live server and a fake datanode that answers
//! instructions.

mod common;

use common::{admin, admin_at, eventually, fast_options, start, FakeNode};
use common_proto::{Instruction, InstructionReply, JsonPayload, RegionReply};
use serde_json::Value;

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

/// Answers the next instruction on `node` with success, heartbeating `regions`.
async fn answer_next(node: &mut FakeNode, regions: &[u64]) -> Instruction {
    let msg = node.next_mailbox().await;
    let ins = Instruction::from_mailbox_message(&msg).expect("instruction");
    let reply = RegionReply {
        region_id: ins.region_id(),
        ok: true,
        error: None,
    };
    let reply = match ins {
        Instruction::OpenRegion { .. } => InstructionReply::OpenRegion(reply),
        Instruction::CloseRegion(_) => InstructionReply::CloseRegion(reply),
        Instruction::DowngradeRegion(_) => InstructionReply::DowngradeRegion(reply),
        Instruction::UpgradeRegion { .. } => InstructionReply::UpgradeRegion(reply),
    };
    node.reply(
        reply.to_mailbox_message(msg.id, "dn", "ms").expect("enc"),
        regions,
    )
    .await;
    ins
}

#[tokio::test]
async fn nodes_regions_create_and_drop() {
    let server = start(fast_options()).await;
    let client = reqwest::Client::new();
    assert_eq!(get(&server.url("/health")).await["status"], "ok");
    let leader = get(&server.url("/leader")).await;
    assert_eq!(leader["is_leader"], true);

    // No datanode yet: a clear JSON error.
    let resp = client
        .post(server.url("/regions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("no live datanode"),
        "{body}"
    );

    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    node.heartbeat(&[]).await.expect("registered");
    let nodes = get(&server.url("/nodes")).await;
    assert_eq!(nodes[0]["node_id"], 1);
    assert_eq!(nodes[0]["alive"], true);
    assert_eq!(nodes[0]["connected"], true);

    // Create: the route is written, OpenRegion goes out, the call waits for the reply.
    let post = {
        let client = client.clone();
        let url = server.url("/regions");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&serde_json::json!({"region_id": 42}))
                .send()
                .await
        })
    };
    let ins = answer_next(&mut node, &[]).await;
    assert!(
        matches!(ins, Instruction::OpenRegion { region_id: 42, .. }),
        "{ins:?}"
    );
    let resp = post.await.expect("task").expect("post");
    assert_eq!(resp.status(), 201);
    let route: Value = resp.json().await.expect("json");
    assert_eq!(route["leader"], 1);

    // The next heartbeat reporting the region gets its leader lease.
    let lease = node
        .heartbeat(&[42])
        .await
        .expect("hb")
        .region_lease
        .expect("lease");
    assert_eq!(lease.regions.len(), 1);
    let regions = get(&server.url("/regions")).await;
    assert_eq!(regions[0]["region_id"], 42);
    assert_eq!(regions[0]["lease_state"], "granted");
    assert_eq!(regions[0]["availability"], "available");

    // Closed on its node (say, by an operator's raw close_region): nobody can write it,
    // and /regions says why rather than "available".
    node.heartbeat(&[]).await.expect("hb");
    let regions = get(&server.url("/regions")).await;
    assert_eq!(regions[0]["lease_state"], "pending", "{regions}");
    assert_eq!(regions[0]["availability"], "unavailable", "{regions}");
    assert!(
        regions[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("node 1, is alive but does not report the region open")),
        "{regions}"
    );
    node.heartbeat(&[42]).await.expect("hb");
    let regions = get(&server.url("/regions")).await;
    assert_eq!(regions[0]["availability"], "available", "{regions}");

    // Duplicate create and bad bodies are clear errors.
    let resp = client
        .post(server.url("/regions"))
        .json(&serde_json::json!({"region_id": 42}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 409);
    let resp = client
        .post(server.url("/regions"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.expect("json")["error"]
        .as_str()
        .expect("msg")
        .contains("invalid request body"));
    let resp = client
        .post(server.url("/regions"))
        .json(&serde_json::json!({"node_id": 77}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 409);

    // Drop: the route goes, CloseRegion goes out.
    let del = {
        let client = client.clone();
        let url = server.url("/regions/42");
        tokio::spawn(async move { client.delete(url).send().await })
    };
    let ins = answer_next(&mut node, &[42]).await;
    assert!(matches!(ins, Instruction::CloseRegion(_)), "{ins:?}");
    assert_eq!(del.await.expect("task").expect("delete").status(), 200);
    let lease = node
        .heartbeat(&[42])
        .await
        .expect("hb")
        .region_lease
        .expect("lease");
    assert_eq!(lease.closeable_region_ids, vec![42]);
    let resp = client
        .delete(server.url("/regions/42"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 404);
    let resp = client
        .delete(server.url("/regions/abc"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn a_create_whose_open_times_out_leaves_no_route() {
    let mut options = fast_options();
    options.mailbox_timeout = std::time::Duration::from_millis(300);
    let server = start(options).await;
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    node.heartbeat(&[]).await.expect("registered");
    let resp = reqwest::Client::new()
        .post(server.url("/regions"))
        .json(&serde_json::json!({"region_id": 5}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 504);
    let srv = server.srv.clone();
    let routes = srv.context().routes.list().await.expect("list");
    assert!(routes.is_empty(), "{routes:?}");
    eventually("mailbox empty", || srv.mailbox().pending_len() == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_reply_is_the_nodes_fault_502_and_routes_naming_node_0_are_refused() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 3, 100).await;
    node.heartbeat(&[]).await.expect("registered");
    let client = reqwest::Client::new();
    let url = server.url("/nodes/3/instructions?timeout_ms=5000");
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            let resp = client
                .post(url)
                .json(&serde_json::json!({"type": "close_region", "region_id": 1}))
                .send()
                .await
                .expect("send");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("json"),
            )
        }
    });
    let msg = node.next_mailbox().await;
    let mut bad = msg.clone();
    bad.json = "{not json".into();
    node.reply(bad, &[]).await;
    let (code, body) = common::within("the instruction call", call)
        .await
        .expect("call");
    assert_eq!(code, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("malformed instruction reply")),
        "{body}"
    );

    let resp = client
        .post(server.url("/routes"))
        .json(&serde_json::json!([{"region_id": 9, "leader": 0}]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("node 0")),
        "{body}"
    );
    // An import may not move a region's leadership: that is a migration's job.
    let import = |leader: u64| {
        client
            .post(server.url("/routes"))
            .json(&serde_json::json!([{"region_id": 9, "leader": leader}]))
            .send()
    };
    assert_eq!(import(1).await.expect("send").status().as_u16(), 200);
    assert_eq!(
        import(1).await.expect("send").status().as_u16(),
        200,
        "the same leader again"
    );
    let resp = import(2).await.expect("send");
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("migrate")),
        "{body}"
    );
    let route = server
        .srv
        .context()
        .routes
        .get(9)
        .await
        .expect("get")
        .expect("route");
    assert_eq!(route.leader, Some(1), "unchanged");
    node.heartbeat(&[]).await.expect("still served");
    server.stop().await;
}

/// Bad query strings are JSON 400s that name the parameter, checked before anything
/// starts: a `wait_ms` too large to be a deadline does not begin a migration first.
#[tokio::test]
async fn bad_query_parameters_are_json_400s_checked_before_acting() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    node.heartbeat(&[]).await.expect("registered");
    // Region 1 exists, so a migration of it could start.
    let post = tokio::spawn(admin_at(
        server.url("/regions"),
        reqwest::Method::POST,
        Some(r#"{"region_id": 1}"#),
    ));
    answer_next(&mut node, &[]).await;
    assert_eq!(post.await.expect("task").0, 201);
    let close = r#"{"type": "close_region", "region_id": 1}"#;
    for (path, names) in [
        ("/nodes/1/instructions?timeout_ms=abc", "invalid query"),
        (
            "/nodes/1/instructions?timeout_ms=3600001",
            "timeout_ms=3600001",
        ),
        ("/regions/1/migrate?wait_ms=-1", "invalid query"),
        (
            "/regions/1/migrate?wait_ms=18446744073709551615",
            "wait_ms=18446744073709551615",
        ),
        ("/nodes/1/drain?wait_ms=soon", "invalid query"),
        ("/nodes/1/drain?wait=1", "unknown field"),
        ("/regions/1/migrate?wait=0", "unknown field"),
        ("/nodes/1/instructions?timeout=5", "unknown field"),
        ("/nodes/1/drain?wait_ms=3600001", "wait_ms=3600001"),
    ] {
        let (code, body) = admin(&server, reqwest::Method::POST, path, Some(close)).await;
        assert_eq!(code, 400, "{path}");
        let msg = body["error"].as_str().expect("error message");
        assert!(msg.contains(names), "{path}: {msg}");
    }
    // Nothing was sent to the node, and no procedure began.
    assert_eq!(server.srv.mailbox().pending_len(), 0);
    let procs = get(&server.url("/procedures")).await;
    assert_eq!(procs["running"], serde_json::json!([]), "{procs}");
    assert_eq!(procs["finished"], serde_json::json!([]), "{procs}");
    // The server goes on serving: an in-range wait gets past the query (to the lack of
    // a second datanode to move to).
    let migrate = "/regions/1/migrate?wait_ms=3600000";
    assert_eq!(
        admin(&server, reqwest::Method::POST, migrate, None).await.0,
        409
    );
    // An instruction to a node that is not connected: not found, not a bad gateway.
    let (code, body) = admin(
        &server,
        reqwest::Method::POST,
        "/nodes/99/instructions",
        Some(close),
    )
    .await;
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|m| m.contains("datanode 99 is not connected")),
        "{body}"
    );
    server.stop().await;
}

/// Errors that axum's own extractors and limits produce (a body over the limit, a path
/// that is not UTF-8) are JSON too, with their status kept.
#[tokio::test]
async fn every_error_is_json_even_those_axum_writes() {
    let server = start(fast_options()).await;
    let client = reqwest::Client::new();
    let big = vec![b' '; 10 * 1024 * 1024];
    for (method, path, body, code) in [
        (
            reqwest::Method::POST,
            "/regions/1/migrate",
            Some(big.clone()),
            413,
        ),
        (reqwest::Method::POST, "/regions", Some(big), 413),
        (reqwest::Method::DELETE, "/regions/%FF", None, 400),
        (reqwest::Method::DELETE, "/regions/abc", None, 400),
    ] {
        let mut req = client
            .request(method.clone(), server.url(path))
            .header("content-type", "application/json");
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), code, "{method} {path}");
        let ct = resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .to_string();
        assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
        let body: Value = resp.json().await.expect("a JSON error");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {body}"
        );
    }
    // Still serving.
    assert_eq!(get(&server.url("/health")).await["status"], "ok");
    server.stop().await;
}
