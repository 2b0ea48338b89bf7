//! kube-runtime's `watcher`, unmodified, against the fake server: list-then-watch and streaming
//! lists, relists after 410, resumes after drops and restarts, 401/403, TLS.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::Api;
use strait_fake_apiserver::{Auth, FakeApiServer, Kind, Options, Verb};

use crate::support::{client, client_with_token, eventually, slice, Events};

fn fake_with_three_slices() -> FakeApiServer {
    let fake = FakeApiServer::start(Options::default());
    fake.apply(&slice("apisix", "httpbin-a", "httpbin", &["127.0.0.2"]));
    fake.apply(&slice("apisix", "httpbin-b", "httpbin", &["127.0.0.3"]));
    fake.apply(&slice("other", "web-a", "web", &["127.0.0.9"]));
    fake
}

#[tokio::test]
async fn watcher_lists_existing_slices_then_streams_changes() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events
        .expect(&[
            "Init",
            "InitApply(httpbin-a)",
            "InitApply(httpbin-b)",
            "InitApply(web-a)",
            "InitDone",
        ])
        .await;
    eventually("the watch is open", || fake.watch_count() == 1).await;

    fake.apply(&slice(
        "apisix",
        "httpbin-a",
        "httpbin",
        &["127.0.0.2", "127.0.0.4"],
    ));
    let event = events.next().await;
    let watcher::Event::Apply(updated) = event else {
        panic!("expected Apply, got {event:?}");
    };
    assert_eq!(updated.endpoints.len(), 2);
    assert_eq!(
        updated.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );
    fake.apply(&slice("apisix", "httpbin-c", "httpbin", &["127.0.0.5"]));
    let deleted_at = fake
        .delete(Kind::EndpointSlice, "apisix", "httpbin-b")
        .expect("exists");
    events.expect(&["Apply(httpbin-c)"]).await;
    let event = events.next().await;
    let watcher::Event::Delete(gone) = event else {
        panic!("expected Delete, got {event:?}");
    };
    assert_eq!(
        gone.endpoints[0].addresses,
        ["127.0.0.3"],
        "DELETED carries the last state"
    );
    assert_eq!(gone.metadata.resource_version, Some(deleted_at.to_string()));
    assert!(events.errors.is_empty(), "{:?}", events.errors);

    let requests = fake.requests();
    let list = requests
        .iter()
        .find(|r| r.is(Verb::List, Kind::EndpointSlice))
        .expect("a LIST");
    assert_eq!(list.path, "/apis/discovery.k8s.io/v1/endpointslices");
    assert_eq!(list.param("limit").as_deref(), Some("500"));
    assert_eq!(list.auth, Auth::Token);
    let watch = requests
        .iter()
        .find(|r| r.is(Verb::Watch, Kind::EndpointSlice))
        .expect("a WATCH");
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(watch.param("resourceVersion"), Some("4".to_string()));
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes_without_a_list() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::namespaced(client(&fake), "apisix");
    let mut events = Events::spawn(watcher(api, watcher::Config::default().streaming_lists()));
    events
        .expect(&[
            "Init",
            "InitApply(httpbin-a)",
            "InitApply(httpbin-b)",
            "InitDone",
        ])
        .await;
    eventually("the watch is open", || fake.watch_count() == 1).await;
    fake.apply(&slice("other", "web-b", "web", &["127.0.0.10"]));
    fake.delete(Kind::EndpointSlice, "apisix", "httpbin-a");
    events.expect(&["Delete(httpbin-a)"]).await;
    assert!(events.errors.is_empty(), "{:?}", events.errors);

    assert_eq!(
        fake.count(Verb::List, Kind::EndpointSlice),
        0,
        "streaming lists need no LIST"
    );
    let watch = fake
        .requests()
        .into_iter()
        .find(|r| r.is(Verb::Watch, Kind::EndpointSlice))
        .expect("a WATCH");
    assert_eq!(
        watch.path,
        "/apis/discovery.k8s.io/v1/namespaces/apisix/endpointslices"
    );
    assert_eq!(watch.param("sendInitialEvents").as_deref(), Some("true"));
    assert_eq!(
        watch.param("resourceVersionMatch").as_deref(),
        Some("NotOlderThan")
    );
}

#[tokio::test]
async fn compaction_and_a_dropped_watch_make_the_watcher_relist() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events.until("InitDone").await;
    eventually("the watch is open", || fake.watch_count() == 1).await;

    // The change lands while no watch is open and history is gone: only a relist can see it.
    fake.compact();
    fake.drop_watches();
    fake.delete(Kind::EndpointSlice, "other", "web-a");
    fake.compact();
    let seen = events.until("Init").await;
    assert!(
        seen.is_empty(),
        "nothing between the drop and the relist: {seen:?}"
    );
    events
        .expect(&["InitApply(httpbin-a)", "InitApply(httpbin-b)", "InitDone"])
        .await;
    assert!(
        events
            .errors
            .iter()
            .any(|e| e.contains("410") || e.contains("too old resource version")),
        "the watcher saw the in-stream 410: {:?}",
        events.errors
    );
    assert_eq!(
        fake.count(Verb::List, Kind::EndpointSlice),
        2,
        "a second LIST happened"
    );

    // And it keeps watching from the relist's version.
    eventually("the watch is open again", || fake.watch_count() == 1).await;
    fake.apply(&slice("apisix", "httpbin-c", "httpbin", &["127.0.0.5"]));
    events.expect(&["Apply(httpbin-c)"]).await;
}

#[tokio::test]
async fn expired_watch_event_makes_the_streaming_watcher_start_over() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let mut events = Events::spawn(watcher(api, watcher::Config::default().streaming_lists()));
    events.until("InitDone").await;
    eventually("the watch is open", || fake.watch_count() == 1).await;

    fake.expire_watches();
    events.until("Init").await;
    events
        .expect(&[
            "InitApply(httpbin-a)",
            "InitApply(httpbin-b)",
            "InitApply(web-a)",
            "InitDone",
        ])
        .await;
    assert!(
        events
            .errors
            .iter()
            .any(|e| e.contains("too old resource version")),
        "{:?}",
        events.errors
    );
    let initial_watches = fake
        .requests()
        .iter()
        .filter(|r| {
            r.is(Verb::Watch, Kind::EndpointSlice) && r.param("sendInitialEvents").is_some()
        })
        .count();
    assert_eq!(
        initial_watches, 2,
        "the watcher asked for the initial events again"
    );
}

#[tokio::test]
async fn dropped_watch_resumes_from_its_version_without_relisting() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events.until("InitDone").await;
    eventually("the watch is open", || fake.watch_count() == 1).await;

    fake.drop_watches();
    // Written while no watch is open: replayed from history on the re-watch.
    fake.apply(&slice("apisix", "httpbin-c", "httpbin", &["127.0.0.5"]));
    events.expect(&["Apply(httpbin-c)"]).await;
    assert_eq!(fake.count(Verb::List, Kind::EndpointSlice), 1, "no relist");
    assert!(
        fake.count(Verb::Watch, Kind::EndpointSlice) >= 2,
        "a re-watch"
    );
}

#[tokio::test]
async fn bookmarks_move_the_watch_version_forward_past_a_compaction() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    // timeoutSeconds=1: the server ends each watch cleanly after a second.
    let mut events = Events::spawn(watcher(api, watcher::Config::default().timeout(1)));
    events.until("InitDone").await;
    eventually("the watch is open", || fake.watch_count() == 1).await;

    // The version moves on without a change the watcher sees; the bookmark tells it.
    let compacted = fake.compact();
    let bookmarked = fake.bookmark();
    assert_eq!(bookmarked, compacted);
    // The watcher does not surface bookmarks: the version of its next watch (after the clean
    // close at the timeout) shows it took the bookmark's.
    eventually("a re-watch from the bookmark's version", || {
        fake.requests().iter().any(|r| {
            r.is(Verb::Watch, Kind::EndpointSlice)
                && r.param("resourceVersion") == Some(bookmarked.to_string())
        })
    })
    .await;
    fake.apply(&slice("apisix", "httpbin-c", "httpbin", &["127.0.0.5"]));
    events.expect(&["Apply(httpbin-c)"]).await;
    assert_eq!(
        fake.count(Verb::List, Kind::EndpointSlice),
        1,
        "no relist needed"
    );
}

#[tokio::test]
async fn restarted_server_keeps_its_state_and_the_watcher_resumes() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client(&fake));
    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events.until("InitDone").await;
    eventually("the watch is open", || fake.watch_count() == 1).await;

    fake.stop();
    assert!(
        std::net::TcpStream::connect(fake.addr()).is_err(),
        "port closed while stopped"
    );
    fake.apply(&slice("apisix", "httpbin-c", "httpbin", &["127.0.0.5"]));
    fake.restart();
    events.expect(&["Apply(httpbin-c)"]).await;
    assert_eq!(
        fake.count(Verb::List, Kind::EndpointSlice),
        1,
        "resumed, not relisted"
    );
    assert!(
        fake.count(Verb::Watch, Kind::EndpointSlice) >= 2,
        "a re-watch after the restart"
    );
}

#[tokio::test]
async fn wrong_token_gets_401_and_kube_reports_it() {
    let fake = fake_with_three_slices();
    let api: Api<EndpointSlice> = Api::all(client_with_token(&fake, "not-the-token"));
    let err = api.list(&Default::default()).await.expect_err("401");
    let kube::Error::Api(status) = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));

    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events.expect(&["Init"]).await;
    let err = events
        .next_item()
        .await
        .expect_err("the watcher reports the 401");
    assert!(
        matches!(&err, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 401),
        "{err:?}"
    );
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.auth == Auth::Refused && r.status == 401));

    // Token rotation: the old token stops working, the new one works.
    let old = fake.token();
    fake.set_token("rotated");
    let old_api: Api<EndpointSlice> = Api::all(client_with_token(&fake, &old));
    assert!(old_api.list(&Default::default()).await.is_err());
    let new_api: Api<EndpointSlice> = Api::all(client_with_token(&fake, "rotated"));
    assert_eq!(
        new_api
            .list(&Default::default())
            .await
            .expect("200")
            .items
            .len(),
        3
    );
}

#[tokio::test]
async fn forbidden_resource_gets_403_until_allowed() {
    let fake = fake_with_three_slices();
    fake.forbid(Kind::EndpointSlice);
    let api: Api<EndpointSlice> = Api::namespaced(client(&fake), "apisix");
    let err = api.list(&Default::default()).await.expect_err("403");
    let kube::Error::Api(status) = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(status.message.starts_with(
        "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:strait:strait\" cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"apisix\""
    ), "{}", status.message);

    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events.expect(&["Init"]).await;
    let second = events.next_item().await;
    assert!(
        matches!(&second, Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 403),
        "{second:?}"
    );
    fake.allow(Kind::EndpointSlice);
    // The watcher retries with backoff; once allowed, a full list arrives.
    let seen = events.until("InitDone").await;
    assert!(
        seen.ends_with(&[
            "Init".to_string(),
            "InitApply(httpbin-a)".into(),
            "InitApply(httpbin-b)".into()
        ]),
        "{seen:?}"
    );
}

#[tokio::test]
async fn tls_server_is_trusted_through_its_ca_and_kubeconfig() {
    let fake = FakeApiServer::start(Options::default().tls());
    fake.apply(&slice("apisix", "httpbin-a", "httpbin", &["127.0.0.2"]));
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    assert!(fake
        .ca_pem()
        .expect("CA")
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // From the kubeconfig, as a user outside the cluster would.
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig()).expect("parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("usable kubeconfig");
    let api: Api<EndpointSlice> = Api::all(kube::Client::try_from(config).expect("client"));
    let mut events = Events::spawn(watcher(api, watcher::Config::default()));
    events
        .expect(&["Init", "InitApply(httpbin-a)", "InitDone"])
        .await;
    eventually("the watch is open", || fake.watch_count() == 1).await;
    fake.delete(Kind::EndpointSlice, "apisix", "httpbin-a");
    events.expect(&["Delete(httpbin-a)"]).await;

    // A client that does not trust the CA fails the handshake.
    let untrusting = kube::Config::new(fake.url().parse().expect("url"));
    let api: Api<EndpointSlice> = Api::all(kube::Client::try_from(untrusting).expect("client"));
    assert!(api.list(&Default::default()).await.is_err());
    assert!(events.errors.is_empty(), "{:?}", events.errors);
}
