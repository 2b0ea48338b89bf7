//! The wire protocol as KUBE-API.md describes it, checked with kube's `Api` and with a raw
//! HTTP/1.1 client: pagination, continue expiry, watch framing, ERROR 410 in-stream, timeouts,
//! selectors, paths, discovery documents, fixtures.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use strait_fake_apiserver::{FakeApiServer, Kind, Options, Verb};

use crate::support::raw;
use crate::support::{client, eventually, slice, within};

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

fn fake_with_three_slices() -> FakeApiServer {
    let fake = FakeApiServer::start(Options::default());
    fake.apply(&slice("apisix", "httpbin-a", "httpbin", &["127.0.0.2"]));
    fake.apply(&slice("apisix", "httpbin-b", "httpbin", &["127.0.0.3"]));
    fake.apply(&slice("other", "web-a", "web", &["127.0.0.9"]));
    fake
}

#[tokio::test]
async fn paginated_list_with_limit_1_gives_all_three_at_one_resource_version() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let first = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("page 1");
    let snapshot_rv = first.metadata.resource_version.clone().expect("rv");
    assert_eq!(first.metadata.remaining_item_count, Some(2));
    // A write between pages must not show up: pages come from one snapshot.
    fake.apply(&slice("apisix", "httpbin-0", "httpbin", &["127.0.0.7"]));
    fake.delete(Kind::EndpointSlice, "other", "web-a");

    let mut names: Vec<String> = first.items.iter().map(|s| s.name_any()).collect();
    let mut token = first.metadata.continue_.clone();
    let mut pages = 1;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(1).continue_token(&t))
            .await
            .expect("next page");
        assert_eq!(page.metadata.resource_version.as_ref(), Some(&snapshot_rv));
        assert_eq!(page.items.len(), 1);
        names.extend(page.items.iter().map(|s| s.name_any()));
        token = page.metadata.continue_.clone();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["httpbin-a", "httpbin-b", "web-a"]);
    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is(Verb::List, Kind::EndpointSlice))
        .collect();
    assert_eq!(lists.len(), 3);
    assert!(lists[1].param("continue").is_some() && lists[1].param("resourceVersion").is_none());

    // A fresh list sees the writes.
    let now = api.list(&ListParams::default()).await.expect("list");
    let names: Vec<String> = now.items.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["httpbin-0", "httpbin-a", "httpbin-b"]);
}

#[tokio::test]
async fn expired_continue_token_gets_410_with_a_fresh_token() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let first = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("page 1");
    fake.compact();
    let token = first.metadata.continue_.expect("continue");
    let err = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect_err("410");
    let kube::Error::Api(status) = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(status
        .message
        .starts_with("The provided continue parameter is too old"));
    let fresh = status.metadata.as_ref().and_then(|m| m.continue_.clone());
    assert!(fresh.is_some_and(|t| !t.is_empty() && t != token));
}

#[test]
fn list_items_carry_no_type_and_lists_tolerate_the_leading_ampersand() {
    let fake = fake_with_three_slices();
    let token = fake.token();
    let r = raw::get(
        fake.addr(),
        &format!("{SLICES}?&limit=500"),
        Some(&token),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    assert_eq!(list["kind"], "EndpointSliceList");
    assert_eq!(list["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        fake.resource_version().to_string()
    );
    let item = &list["items"][0];
    assert!(
        item.get("kind").is_none() && item.get("apiVersion").is_none(),
        "{item}"
    );
    assert_eq!(item["ports"][0]["protocol"], "TCP");
    assert!(item["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(item["metadata"]["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn watch_from_a_compacted_version_is_http_200_with_one_error_event() {
    let fake = fake_with_three_slices();
    let old = fake.resource_version();
    let compacted = fake.compact();
    let token = fake.token();
    let target = format!(
        "{SLICES}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={old}"
    );
    let r = raw::get(fake.addr(), &target, Some(&token), None);
    assert_eq!(r.status, 200, "never an HTTP 410 for a watch");
    assert!(r.complete, "the stream ends cleanly after the error");
    assert_eq!(r.header("cache-control"), Some("no-cache, private"));
    assert_eq!(
        r.events(),
        [
            json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "Expired", "code": 410,
            "message": format!("too old resource version: {old} ({compacted})")}})
        ]
    );
    // At the compaction's version the watch is fine.
    let target = format!("{SLICES}?watch=true&timeoutSeconds=1&resourceVersion={compacted}");
    let r = raw::get(fake.addr(), &target, Some(&token), None);
    assert_eq!((r.status, r.complete, r.events().len()), (200, true, 0));
}

#[test]
fn watch_ends_cleanly_at_timeout_seconds_and_abruptly_when_dropped() {
    let fake = fake_with_three_slices();
    let token = fake.token();
    let started = std::time::Instant::now();
    let r = raw::get(
        fake.addr(),
        &format!("{SLICES}?watch=true&timeoutSeconds=1&resourceVersion=0"),
        Some(&token),
        None,
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(r.complete, "terminating chunk at the deadline");
    let events = r.events();
    assert_eq!(events.len(), 3, "synthetic ADDED for the current state");
    assert!(events
        .iter()
        .all(|e| e["type"] == "ADDED" && e["object"]["kind"] == "EndpointSlice"));

    let addr = fake.addr();
    let reader = std::thread::spawn(move || {
        raw::get(
            addr,
            &format!("{SLICES}?watch=true&resourceVersion=0"),
            Some(&token),
            None,
        )
    });
    assert!(fake.wait_for(crate::support::DEADLINE, |f| f.watch_count() == 1));
    fake.drop_watches();
    let r = reader.join().expect("reader");
    assert!(!r.complete, "no terminating chunk after drop_watches");
    assert_eq!(r.events().len(), 3);
    assert!(fake.wait_for(crate::support::DEADLINE, |f| f.watch_count() == 0));
}

#[tokio::test]
async fn watch_events_carry_types_last_state_on_delete_and_bookmarks() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::namespaced(client(&fake), "apisix");
    let start = fake.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &start)
        .await
        .expect("watch")
        .boxed();
    eventually("the watch is open", || fake.watch_count() == 1).await;
    fake.apply(&slice(
        "apisix",
        "httpbin-a",
        "httpbin",
        &["127.0.0.2", "127.0.0.4"],
    ));
    fake.apply(&slice("other", "web-b", "web", &["127.0.0.10"])); // other namespace: unseen
    fake.apply(&slice("apisix", "httpbin-c", "httpbin", &["127.0.0.5"]));
    let deleted_at = fake
        .delete(Kind::EndpointSlice, "apisix", "httpbin-b")
        .expect("exists");
    let bookmark_rv = fake.bookmark();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = within("a watch event", stream.try_next())
            .await
            .expect("ok")
            .expect("open");
        seen.push(match event {
            WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
            WatchEvent::Deleted(o) => {
                assert_eq!(o.endpoints[0].addresses, ["127.0.0.3"]);
                assert_eq!(o.resource_version(), Some(deleted_at.to_string()));
                format!("DELETED {}", o.name_any())
            }
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.types.kind, "EndpointSlice");
                assert_eq!(b.types.api_version, "discovery.k8s.io/v1");
                format!("BOOKMARK {}", b.metadata.resource_version)
            }
            WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "MODIFIED httpbin-a",
            "ADDED httpbin-c",
            "DELETED httpbin-b",
            &format!("BOOKMARK {bookmark_rv}")
        ]
    );
}

#[tokio::test]
async fn label_selector_watch_turns_matching_transitions_into_added_and_deleted() {
    let fake = FakeApiServer::start(Options::default());
    let labeled = |tier: &str| {
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"tier": tier}},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    };
    fake.apply(&labeled("front"));
    let api: Api<Service> = Api::all(client(&fake));
    let listed = api
        .list(&ListParams::default().labels("tier=front"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.metadata.remaining_item_count, None);
    let rv = listed.metadata.resource_version.expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().labels("tier=front"), &rv)
        .await
        .expect("watch")
        .boxed();
    eventually("the watch is open", || fake.watch_count() == 1).await;
    let left_at = fake.apply(&labeled("back"));
    fake.apply(&labeled("front"));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = within("a watch event", stream.try_next())
            .await
            .expect("ok")
            .expect("open");
        seen.push(match event {
            WatchEvent::Added(o) => format!("ADDED {:?}", o.labels()["tier"]),
            WatchEvent::Deleted(o) => {
                assert_eq!(
                    o.resource_version(),
                    Some(left_at.to_string()),
                    "the change's version"
                );
                format!("DELETED {:?}", o.labels()["tier"])
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        seen,
        [r#"DELETED "front""#, r#"ADDED "front""#],
        "old content on DELETED"
    );
    let prod: Api<Service> = Api::namespaced(client(&fake), "prod");
    let svc = prod.get("web").await.expect("get by name");
    assert_eq!(svc.spec.expect("spec").type_.as_deref(), Some("ClusterIP"));
}

#[tokio::test]
async fn selectors_and_namespaces_filter_lists_and_bad_selectors_are_400() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let names = |l: kube::core::ObjectList<EndpointSlice>| -> Vec<String> {
        l.items.iter().map(|s| s.name_any()).collect()
    };
    let by_label = api
        .list(&ListParams::default().labels("kubernetes.io/service-name=httpbin"))
        .await
        .expect("list");
    assert_eq!(names(by_label), ["httpbin-a", "httpbin-b"]);
    let by_field = api
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .expect("list");
    assert_eq!(names(by_field), ["web-a"]);
    let by_both = api
        .list(
            &ListParams::default()
                .labels("kubernetes.io/service-name!=web")
                .fields("metadata.name!=httpbin-a"),
        )
        .await
        .expect("list");
    assert_eq!(names(by_both), ["httpbin-b"]);
    let ns: Api<EndpointSlice> = Api::namespaced(client(&fake), "other");
    assert_eq!(
        names(ns.list(&ListParams::default()).await.expect("list")),
        ["web-a"]
    );
    assert_eq!(ns.get("web-a").await.expect("get").name_any(), "web-a");

    let err = api
        .list(&ListParams::default().fields("spec.x=1"))
        .await
        .expect_err("400");
    let kube::Error::Api(status) = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "\"spec.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    );
    let err = ns.get("nope").await.expect_err("404");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
}

#[test]
fn discovery_documents_list_the_served_resources() {
    let fake = FakeApiServer::start(Options::default().anonymous_reads());
    let get = |path: &str| {
        let r = raw::get(fake.addr(), path, None, Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"));
        assert_eq!(r.status, 200, "{path}");
        r.json()
    };
    assert_eq!(get("/api")["versions"], json!(["v1"]));
    assert_eq!(get("/apis")["groups"][0]["name"], "discovery.k8s.io");
    assert_eq!(get("/version")["major"], "1");
    let core = get("/api/v1");
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["endpoints", "namespaces", "nodes", "secrets", "services"]
    );
    let group = get("/apis/discovery.k8s.io/v1");
    assert_eq!(group["resources"][0]["kind"], "EndpointSlice");
    assert_eq!(
        group["resources"][0]["verbs"],
        json!(["get", "list", "watch"])
    );
    assert_eq!(
        raw::get(fake.addr(), "/api/v1/pods", None, None).status,
        404
    );
    assert!(fake.requests().iter().any(|r| r.verb == Verb::Discovery));
}

#[test]
fn typed_yaml_fixtures_load_and_bad_documents_are_refused() {
    let fake = FakeApiServer::start(Options::default());
    let versions = fake.apply_yaml(include_str!("../fixtures/httpbin.yaml"));
    assert_eq!(versions.len(), 4);
    assert!(versions.windows(2).all(|w| w[0] < w[1]));
    let ep: Endpoints = serde_json::from_value(
        fake.get(Kind::Endpoints, "apisix", "httpbin")
            .expect("loaded"),
    )
    .expect("typed");
    assert_eq!(
        ep.subsets.expect("subsets")[0]
            .addresses
            .as_ref()
            .expect("addresses")
            .len(),
        3
    );
    assert!(fake.get(Kind::Namespace, "", "apisix").is_some());

    let before = fake.resource_version();
    let err = fake
        .try_apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: y}\naddressType: [1]\n")
        .expect_err("invalid slice");
    assert!(
        err.to_string()
            .contains("EndpointSlice \"y\" is not a valid k8s-openapi object"),
        "{err}"
    );
    assert_eq!(fake.resource_version(), before, "nothing applied");
    assert!(fake
        .try_apply(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
        .is_err());
}

#[test]
fn periodic_bookmarks_reach_watches_that_allow_them() {
    let fake = FakeApiServer::start(Options {
        bookmark_interval: Some(std::time::Duration::from_millis(100)),
        ..Options::default()
    });
    let token = fake.token();
    let rv = fake.resource_version();
    let with = raw::get(
        fake.addr(),
        &format!(
            "{SLICES}?watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion={rv}"
        ),
        Some(&token),
        None,
    );
    let bookmarks = with.events();
    assert!(!bookmarks.is_empty(), "bookmarks every 100 ms for a second");
    assert!(bookmarks.iter().all(|e| e["type"] == "BOOKMARK"
        && e["object"]["metadata"]["resourceVersion"] == *rv.to_string()
        && e["object"]["kind"] == "EndpointSlice"));
    let without = raw::get(
        fake.addr(),
        &format!("{SLICES}?watch=true&timeoutSeconds=1&resourceVersion={rv}"),
        Some(&token),
        None,
    );
    assert!(without.events().is_empty(), "no bookmarks unless allowed");
}

#[tokio::test]
async fn endpoints_and_metadata_only_clients_are_served() {
    let fake = FakeApiServer::start(Options::default());
    fake.apply_yaml(include_str!("../fixtures/httpbin.yaml"));
    let endpoints: Api<Endpoints> = Api::namespaced(client(&fake), "apisix");
    let list = endpoints.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items[0].name_any(), "httpbin");
    let ports = list.items[0].subsets.as_ref().expect("subsets")[0]
        .ports
        .clone()
        .expect("ports");
    assert_eq!(
        ports[0].protocol.as_deref(),
        Some("TCP"),
        "server-side default"
    );

    let slices: Api<EndpointSlice> = Api::all(client(&fake));
    let meta = slices
        .list_metadata(&ListParams::default())
        .await
        .expect("metadata list");
    assert_eq!(meta.items.len(), 1);
    assert_eq!(meta.items[0].name_any(), "httpbin-abc12");
    let rv = meta.metadata.resource_version.expect("rv");
    let mut stream = slices
        .watch_metadata(&WatchParams::default(), &rv)
        .await
        .expect("metadata watch")
        .boxed();
    eventually("the watch is open", || fake.watch_count() == 1).await;
    fake.delete(Kind::EndpointSlice, "apisix", "httpbin-abc12");
    let event = within("a watch event", stream.try_next())
        .await
        .expect("ok")
        .expect("open");
    assert!(
        matches!(&event, WatchEvent::Deleted(o) if o.name_any() == "httpbin-abc12"),
        "{event:?}"
    );
    let accept = fake
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::Watch)
        .count();
    assert_eq!(accept, 1);
}
