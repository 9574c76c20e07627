//! Token authentication, TLS, and the memory bound of queries.

use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use volley_connectors::live::{LiveTable, LiveTables};

use super::{client, demand, pairs, query, serve_with};
use crate::{Auth, DEFAULT_QUERY_MEMORY, Tls};

fn tables() -> LiveTables {
    let mut live = LiveTables::new();
    live.add(LiveTable::new("demand", demand(&[]).schema(), &["geohash6".into()]).unwrap())
        .unwrap();
    live.apply("demand", &demand(&[("9q8yyk", 3)])).unwrap();
    live.publish(1).unwrap();
    live
}

const SQL: &str = "SELECT geohash6, n FROM demand";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_on_every_call() {
    let live = tables();
    let (addr, _stop) = serve_with(&live, Auth::token("s3cret"), None, DEFAULT_QUERY_MEMORY).await;

    // Without a token, every kind of call is refused.
    let mut anonymous = client(addr).await;
    let err = query(&mut anonymous, SQL).await.unwrap_err();
    assert!(err.contains("requires a token"), "{err}");
    assert!(anonymous.get_catalogs().await.is_err());
    assert!(anonymous.get_table_types().await.is_err());
    assert!(anonymous.get_sql_info(vec![]).await.is_err());
    assert!(anonymous.prepare(SQL.into(), None).await.is_err());
    // A ticket obtained elsewhere is refused too.
    let mut right = client(addr).await;
    right.set_token("s3cret".into());
    let info = right.execute(SQL.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert!(anonymous.do_get(ticket.clone()).await.is_err());

    // The wrong token, as bearer or as a login's password, is refused.
    let mut wrong = client(addr).await;
    wrong.set_token("s3cre".into());
    let err = query(&mut wrong, SQL).await.unwrap_err();
    assert!(err.contains("wrong"), "{err}");
    assert!(wrong.do_get(ticket.clone()).await.is_err());
    let mut login = client(addr).await;
    assert!(login.handshake("analyst", "guess").await.is_err());

    // The right one is accepted: as a bearer, and through the handshake's login.
    assert_eq!(
        pairs(&query(&mut right, SQL).await.unwrap()),
        vec![("9q8yyk".into(), 3)]
    );
    let token = login.handshake("analyst", "s3cret").await.unwrap();
    assert_eq!(token.as_ref(), b"s3cret");
    assert_eq!(login.token().map(String::as_str), Some("s3cret"));
    assert_eq!(
        pairs(&query(&mut login, SQL).await.unwrap()),
        vec![("9q8yyk".into(), 3)]
    );
    assert!(login.get_catalogs().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_with_a_self_signed_certificate() {
    let live = tables();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let tls = Tls {
        cert_pem: cert_pem.clone().into_bytes(),
        key_pem: certified.signing_key.serialize_pem().into_bytes(),
    };
    let (addr, _stop) =
        serve_with(&live, Auth::token("t0ken"), Some(tls), DEFAULT_QUERY_MEMORY).await;
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&cert_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token("t0ken".into());
    assert_eq!(
        pairs(&query(&mut client, SQL).await.unwrap()),
        vec![("9q8yyk".into(), 3)]
    );

    // Plain text to a TLS server does not get an answer.
    let mut plain = super::client(addr).await;
    plain.set_token("t0ken".into());
    assert!(query(&mut plain, SQL).await.is_err());

    // A certificate that is not PEM is refused before serving.
    let bad = Tls {
        cert_pem: b"not a certificate".to_vec(),
        key_pem: b"not a key".to_vec(),
    };
    assert!(crate::check_tls(&bad).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_fails_and_the_server_keeps_answering() {
    let live = tables();
    let (addr, _stop) = serve_with(&live, Auth::open(), None, 8 << 20).await;
    let mut client = client(addr).await;
    // A hash join cannot spill: its build side must fit in memory.
    let big = "SELECT count(*) FROM generate_series(1, 3000000) a \
               JOIN generate_series(1, 3000000) b ON a.value = b.value";
    let err = query(&mut client, big).await.unwrap_err();
    assert!(err.contains("more memory than queries may use"), "{err}");
    assert_eq!(
        pairs(&query(&mut client, SQL).await.unwrap()),
        vec![("9q8yyk".into(), 3)]
    );
}
