//! gRPC access control: tokens checked before any service runs, rights per context.

use std::sync::Arc;

use myelin_control::{AccessControl, ControlDb, Grant, Role};
use myelin_grpc::GrpcConfig;
use myelin_proto::grpc::control::ClientIdentification;
use myelin_proto::grpc::control::platform_service_client::PlatformServiceClient;
use myelin_proto::grpc::event::GetLastTokenRequest;
use myelin_testkit::client::{append, error_code, last_token};
use myelin_testkit::events::client_event as event;
use myelin_testkit::grpc::start_with;
use tonic::Code;
use tonic::metadata::MetadataValue;

const TOKEN: &str = "configured-token";
const ADMIN_TOKEN: &str = "configured-admin-token";

fn with_token<T>(message: T, token: Option<&str>, context: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("axoniq-access-token", MetadataValue::try_from(token).expect("ascii"));
    }
    if let Some(context) = context {
        request
            .metadata_mut()
            .insert("axoniq-context", MetadataValue::try_from(context).expect("ascii"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_a_token_with_the_right() {
    let dir = tempfile::tempdir().expect("temp dir");
    let control = Arc::new(ControlDb::open(dir.path()).expect("control db"));
    let reader = control
        .create_application(
            "reader",
            "",
            &[Grant {
                context: "default".to_string(),
                role: Role::Read,
            }],
        )
        .expect("app");
    let writer = control
        .create_application(
            "writer",
            "",
            &[Grant {
                context: "default".to_string(),
                role: Role::Write,
            }],
        )
        .expect("app");
    let access = Arc::new(AccessControl::new(
        true,
        Some(TOKEN.to_string()),
        Some(ADMIN_TOKEN.to_string()),
        control,
    ));
    let server = start_with(
        GrpcConfig {
            access: Some(access),
            ..GrpcConfig::default()
        },
        &["default", "other"],
    )
    .await;
    let client = server.event_store().await;

    // Reads.
    let read = |token: Option<&'static str>, context: Option<&'static str>| {
        let mut client = client.clone();
        async move {
            client
                .get_last_token(with_token(GetLastTokenRequest {}, token, context))
                .await
        }
    };
    let missing = read(None, None).await.expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(error_code(&missing), Some("AXONIQ-1000"));
    assert!(missing.message().starts_with("[AXONIQ-1000]"), "{}", missing.message());
    let wrong = read(Some("wrong"), None).await.expect_err("wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(error_code(&wrong), Some("AXONIQ-1001"));
    assert_eq!(
        read(Some(TOKEN), None).await.expect("token reads").into_inner().token,
        -1
    );
    assert!(read(Some(ADMIN_TOKEN), Some("other")).await.is_ok());
    let reader_token: &'static str = Box::leak(reader.clone().into_boxed_str());
    let writer_token: &'static str = Box::leak(writer.clone().into_boxed_str());
    assert!(read(Some(reader_token), None).await.is_ok());
    let elsewhere = read(Some(reader_token), Some("other"))
        .await
        .expect_err("no right on other");
    assert_eq!(elsewhere.code(), Code::PermissionDenied);
    assert_eq!(error_code(&elsewhere), Some("AXONIQ-1001"));
    let write_only = read(Some(writer_token), None).await.expect_err("WRITE does not read");
    assert_eq!(write_only.code(), Code::PermissionDenied);

    // Appends.
    let append_as = |token: Option<&'static str>, sequence: i64| {
        let mut client = client.clone();
        async move {
            client
                .append_event(with_token(tokio_stream::iter(vec![event("a", sequence)]), token, None))
                .await
        }
    };
    let denied = append_as(Some(reader_token), 0).await.expect_err("READ does not write");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = append_as(None, 0).await.expect_err("no token");
    assert_eq!(denied.code(), Code::Unauthenticated);
    assert!(append_as(Some(writer_token), 0).await.is_ok());
    assert!(append_as(Some(TOKEN), 1).await.is_ok());
    // Nothing refused was stored.
    assert_eq!(read(Some(TOKEN), None).await.expect("reads").into_inner().token, 1);

    // The platform connection needs a token with any right on its context.
    let mut platform = PlatformServiceClient::new(server.channel().await);
    let identification = ClientIdentification::default();
    let refused = platform
        .get_platform_server(with_token(identification.clone(), None, None))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        platform
            .get_platform_server(with_token(identification.clone(), Some(writer_token), None))
            .await
            .is_ok()
    );
    let refused = platform
        .get_platform_server(with_token(identification, Some(writer_token), Some("other")))
        .await
        .expect_err("no right on other");
    assert_eq!(refused.code(), Code::PermissionDenied);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn access_control_off_lets_every_call_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let control = Arc::new(ControlDb::open(dir.path()).expect("control db"));
    let access = Arc::new(AccessControl::new(false, Some(TOKEN.to_string()), None, control));
    let server = start_with(
        GrpcConfig {
            access: Some(access),
            ..GrpcConfig::default()
        },
        &["default"],
    )
    .await;
    let mut client = server.event_store().await;
    assert_eq!(last_token(&mut client).await, -1);
    append(&mut client, vec![event("a", 0)])
        .await
        .expect("appends without a token");
    drop(client);
    server.stop().await;
}
