//! Access control on: every route × {no credentials, wrong token, application token, admin
//! token, user with basic auth}.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use myelin_control::{Grant, Role};
use myelin_testkit::rest::{ADMIN_TOKEN, Options, TOKEN, fill_placeholders, rest_with};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Open,
    Authenticated,
    Admin,
}

/// The expected class of a route, decided here independently of the router.
fn class(method: &Method, path: &str) -> Class {
    if path == "/actuator/health/liveness" {
        return Class::Open;
    }
    let admin_prefixes = [
        "/v1/backup/",
        "/createControlDbBackup",
        "/v1/context",
        "/v1/users",
        "/v1/applications",
        "/internal/",
        "/v1/cluster",
        "/v1/replicationgroups",
    ];
    let admin_public = [
        "/v1/public/users",
        "/v1/public/applications",
        "/v1/public/replicationgroups",
    ];
    if admin_prefixes.iter().any(|p| path.starts_with(p)) || admin_public.contains(&path) {
        return Class::Admin;
    }
    let _ = method;
    Class::Authenticated
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_matrix() {
    let rest = rest_with(Options {
        access_control: true,
        ..Options::default()
    });
    let control = rest.state.node.control();
    let app_token = control
        .create_application(
            "reader",
            "",
            &[Grant {
                context: "default".to_string(),
                role: Role::Read,
            }],
        )
        .expect("application");
    control
        .upsert_user(
            "root",
            "root-password",
            &[Grant {
                context: "*".to_string(),
                role: Role::Admin,
            }],
        )
        .expect("admin user");
    control
        .upsert_user(
            "viewer",
            "viewer-password",
            &[Grant {
                context: "default".to_string(),
                role: Role::Read,
            }],
        )
        .expect("user");
    let admin_basic = basic("root", "root-password");
    let viewer_basic = basic("viewer", "viewer-password");
    let wrong_basic = basic("root", "wrong");

    // The routes: everything the OpenAPI document lists, plus the documentation itself.
    let doc = {
        let answer = rest
            .call(
                Method::GET,
                myelin_rest::OPENAPI_PATH,
                &[("AxonIQ-Access-Token", ADMIN_TOKEN)],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        answer.json()
    };
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let method: Method = method.to_ascii_uppercase().parse().expect("method");
            routes.push((method, fill_placeholders(path)));
        }
    }
    assert!(routes.len() >= 20, "{routes:?}");
    for extra in [myelin_rest::OPENAPI_PATH, "/swagger-ui/index.html", "/swagger-ui.html"] {
        routes.push((Method::GET, extra.to_string()));
    }

    let denied = |status: StatusCode| status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    let mut checked = 0;
    for (method, path) in &routes {
        let expected = class(method, path);
        let call = |headers: Vec<(&'static str, String)>| {
            let (method, path) = (method.clone(), path.clone());
            let rest = &rest;
            async move {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                // Bodies are irrelevant to access: checks happen before the body is read.
                rest.call(method, &path, &headers, None).await
            }
        };
        let none = call(vec![]).await;
        let wrong = call(vec![("AxonIQ-Access-Token", "not-a-token".to_string())]).await;
        let wrong_password = call(vec![("authorization", wrong_basic.clone())]).await;
        let app = call(vec![("AxonIQ-Access-Token", app_token.clone())]).await;
        let viewer = call(vec![("authorization", viewer_basic.clone())]).await;
        let admin = call(vec![("AxonIQ-Access-Token", ADMIN_TOKEN.to_string())]).await;
        let admin_user = call(vec![("authorization", admin_basic.clone())]).await;
        let token = call(vec![("AxonIQ-Access-Token", TOKEN.to_string())]).await;
        let what = format!("{method} {path} ({expected:?})");
        match expected {
            Class::Open => {
                for answer in [&none, &wrong, &app, &admin] {
                    assert!(!denied(answer.status), "{what}: {}", answer.status);
                }
            }
            Class::Authenticated | Class::Admin => {
                for (answer, code) in [
                    (&none, "AXONIQ-1000"),
                    (&wrong, "AXONIQ-1001"),
                    (&wrong_password, "AXONIQ-1001"),
                ] {
                    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
                    assert_eq!(answer.header("AxonIQ-ErrorCode"), Some(code), "{what}");
                    assert!(answer.header("www-authenticate").is_some(), "{what}");
                }
                for answer in [&admin, &admin_user] {
                    assert!(!denied(answer.status), "{what}: admin got {}", answer.status);
                }
                for answer in [&app, &viewer, &token] {
                    if expected == Class::Admin {
                        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}");
                        assert_eq!(answer.header("AxonIQ-ErrorCode"), Some("AXONIQ-1001"), "{what}");
                    } else {
                        assert!(!denied(answer.status), "{what}: {}", answer.status);
                    }
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, routes.len());

    // Both control-database backup endpoints are closed to non-admins (upstream leaves the
    // SE one open).
    for path in ["/createControlDbBackup", "/v1/backup/createControlDbBackup"] {
        assert_eq!(rest.post(path, None).await.status, StatusCode::UNAUTHORIZED);
        let app = rest
            .call(Method::POST, path, &[("AxonIQ-Access-Token", app_token.as_str())], None)
            .await;
        assert_eq!(app.status, StatusCode::FORBIDDEN);
    }
    // /v1/public/me tells who is asking.
    let me = rest
        .call(
            Method::GET,
            "/v1/public/me",
            &[("AxonIQ-Access-Token", app_token.as_str())],
            None,
        )
        .await
        .json();
    assert_eq!(me["authentication"], true);
    assert_eq!(me["user"]["userName"], "reader");
    rest.shutdown();
}
