//! The aws provider against a real moto server behind a counting proxy, through the
//! `Provider` trait: every parameter form, versions, batching and cached credentials, and the
//! failure codes. Retries and failover: `aws_resilience.rs`; identities: `aws_identity.rs`.

mod aws_support;
mod support;

use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_ssm::types::ParameterType;
use aws_support::proxy::{Fault, Rule};
use aws_support::{
    FAKE_JWT, ROLE, bed, between, bytes, input, irsa_tokens, local_provider, mode, params, ssm,
    text, version,
};
use keymount::provider::Provider;
use support::moto::REGION;
use tonic::Code;

async fn put_param(ssm: &aws_sdk_ssm::Client, name: &str, value: &str, kind: ParameterType) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn secrets_and_parameters_in_every_form() {
    let (moto, proxy) = bed().await;
    let sm = moto.secretsmanager();
    let db = sm
        .create_secret()
        .name("team/db")
        .secret_string(r#"{"username":"admin","password":"db-pass-one","hosts":[{"name":"h0"},{"name":"h1"}],"nested":{"deep":{"key":"deep-value"}}}"#)
        .send()
        .await
        .unwrap();
    let v1 = db.version_id().unwrap().to_owned();
    let v2 = sm
        .put_secret_value()
        .secret_id("team/db")
        .secret_string(r#"{"username":"admin","password":"db-pass-two","hosts":[{"name":"h0"},{"name":"h1"}],"nested":{"deep":{"key":"deep-value"}}}"#)
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    let api = sm
        .create_secret()
        .name("api-key")
        .secret_string("api-key-value")
        .send()
        .await
        .unwrap();
    let api_arn = api.arn().unwrap().to_owned();
    let binary = vec![0u8, 159, 146, 150, 255, 1, 2];
    sm.create_secret()
        .name("cert.bin")
        .secret_binary(Blob::new(binary.clone()))
        .send()
        .await
        .unwrap();
    sm.create_secret()
        .name("labelled")
        .secret_string("blue-value")
        .send()
        .await
        .unwrap();
    sm.put_secret_value()
        .secret_id("labelled")
        .secret_string("green-value")
        .version_stages("green")
        .send()
        .await
        .unwrap();
    let ps = ssm(&moto);
    put_param(&ps, "/app/color", "red", ParameterType::String).await;
    put_param(&ps, "/app/color", "blue", ParameterType::String).await;
    ps.label_parameter_version()
        .name("/app/color")
        .parameter_version(1)
        .labels("stable")
        .send()
        .await
        .unwrap();
    put_param(
        &ps,
        "/app/password",
        "ssm-secure-pass",
        ParameterType::SecureString,
    )
    .await;
    put_param(&ps, "plain", "a,b,c", ParameterType::StringList).await;

    let objects = format!(
        r#"
- objectName: team/db
  objectType: secretsmanager
  filePermission: "0600"
  jmesPath:
    - {{path: username, objectAlias: db-user}}
    - {{path: "hosts[1].name", objectAlias: db-host, filePermission: "0640"}}
    - {{path: nested.deep.key, objectAlias: db-deep}}
- {{objectName: team/db, objectType: secretsmanager, objectAlias: db-previous, objectVersionLabel: AWSPREVIOUS}}
- {{objectName: team/db, objectType: secretsmanager, objectAlias: db-v1, objectVersion: "{v1}"}}
- {{objectName: "{api_arn}", objectAlias: api-key}}
- {{objectName: cert.bin, objectType: secretsmanager}}
- {{objectName: labelled, objectType: secretsmanager, objectVersionLabel: green, objectAlias: green}}
- {{objectName: /app/color, objectType: ssmparameter}}
- {{objectName: /app/color, objectType: ssmparameter, objectVersion: 1, objectAlias: color-v1}}
- {{objectName: /app/color, objectType: ssmparameter, objectVersionLabel: stable, objectAlias: color-stable}}
- {{objectName: /app/password, objectType: ssmparameter, filePermission: "0400"}}
- {{objectName: plain, objectType: ssmparameter}}
"#
    );
    let p = local_provider(&proxy);
    let out = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(&objects, &[]),
        ))
        .await
        .unwrap();
    let db: serde_json::Value = serde_json::from_str(&text(&out, "team_db")).unwrap();
    assert_eq!(db["password"], "db-pass-two");
    assert_eq!(mode(&out, "team_db"), 0o600);
    assert_eq!(text(&out, "db-user"), "admin");
    assert_eq!(mode(&out, "db-user"), 0o600);
    assert_eq!(text(&out, "db-host"), "h1");
    assert_eq!(mode(&out, "db-host"), 0o640);
    assert_eq!(text(&out, "db-deep"), "deep-value");
    assert!(text(&out, "db-previous").contains("db-pass-one"));
    assert!(text(&out, "db-v1").contains("db-pass-one"));
    assert_eq!(text(&out, "api-key"), "api-key-value");
    assert_eq!(
        bytes(&out, "cert.bin"),
        binary,
        "binary secrets are written as bytes"
    );
    assert_eq!(text(&out, "green"), "green-value");
    assert_eq!(text(&out, "_app_color"), "blue");
    assert_eq!(text(&out, "color-v1"), "red");
    assert_eq!(text(&out, "color-stable"), "red");
    assert_eq!(text(&out, "_app_password"), "ssm-secure-pass");
    assert_eq!(mode(&out, "_app_password"), 0o400);
    assert_eq!(mode(&out, "plain"), 0o644);
    assert_eq!(text(&out, "plain"), "a,b,c");
    // Versions are AWS's: the VersionId, the parameter version; jmesPath files the parent's.
    assert_eq!(version(&out, "team_db"), v2);
    assert_eq!(version(&out, "db-user"), v2);
    assert_eq!(version(&out, "db-previous"), v1);
    assert_eq!(version(&out, "_app_color"), "2");
    assert_eq!(version(&out, "color-v1"), "1");
    assert_eq!(out.versions.len(), out.files.len());

    // An unchanged secret keeps its version; a rotated one gets a new one.
    let again = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(&objects, &[]),
        ))
        .await
        .unwrap();
    assert_eq!(out.versions, again.versions);
    sm.put_secret_value()
        .secret_id("team/db")
        .secret_string(
            r#"{"username":"root","hosts":[{},{"name":"h1"}],"nested":{"deep":{"key":"k"}}}"#,
        )
        .send()
        .await
        .unwrap();
    let rotated = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(&objects, &[]),
        ))
        .await
        .unwrap();
    assert_ne!(version(&rotated, "team_db"), v2);
    assert_eq!(text(&rotated, "db-user"), "root");
    assert_eq!(version(&rotated, "_app_color"), "2");
    assert_eq!(version(&rotated, "api-key"), version(&out, "api-key"));

    // pathTranslation: another character, or off (files in subdirectories); an ARN without
    // an alias is its own file name.
    let objects = format!(
        "- {{objectName: team/db, objectType: secretsmanager}}\n- {{objectName: \"{api_arn}\"}}"
    );
    let dash = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(&objects, &[("pathTranslation", "-")]),
        ))
        .await
        .unwrap();
    assert!(dash.files.iter().any(|f| f.path == "team-db"));
    let off = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(&objects, &[("pathTranslation", "False")]),
        ))
        .await
        .unwrap();
    assert!(off.files.iter().any(|f| f.path == "team/db"));
    assert_eq!(text(&off, &api_arn), "api-key-value");
}

#[tokio::test]
async fn batches_of_20_secrets_and_10_parameters_and_cached_credentials() {
    let (moto, proxy) = bed().await;
    let sm = moto.secretsmanager();
    let ps = ssm(&moto);
    let mut objects = String::new();
    for i in 0..25 {
        sm.create_secret()
            .name(format!("bulk/s{i}"))
            .secret_string(format!("secret-{i}"))
            .send()
            .await
            .unwrap();
        objects.push_str(&format!(
            "- {{objectName: bulk/s{i}, objectType: secretsmanager}}\n"
        ));
    }
    for i in 0..15 {
        put_param(
            &ps,
            &format!("/bulk/p{i}"),
            &format!("param-{i}"),
            ParameterType::SecureString,
        )
        .await;
        objects.push_str(&format!(
            "- {{objectName: /bulk/p{i}, objectType: ssmparameter}}\n"
        ));
    }
    proxy.reset();
    let p = local_provider(&proxy);
    let out = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(&objects, &[]),
        ))
        .await
        .unwrap();
    assert_eq!(out.files.len(), 40);
    assert_eq!(text(&out, "bulk_s24"), "secret-24");
    assert_eq!(text(&out, "_bulk_p14"), "param-14");
    assert_eq!(proxy.count("BatchGetSecretValue"), 2, "{:?}", proxy.calls());
    assert_eq!(proxy.count("GetSecretValue"), 0);
    assert_eq!(proxy.count("GetParameters"), 2);
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 1);
    // Later mounts reuse the credentials; concurrent first mounts of another identity share
    // one AssumeRoleWithWebIdentity.
    p.mount(&input(
        "shop",
        "web",
        &irsa_tokens(),
        &params(&objects, &[]),
    ))
    .await
    .unwrap();
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 1);
    assert_eq!(proxy.count("BatchGetSecretValue"), 4);
    let few = "- {objectName: bulk/s0, objectType: secretsmanager}";
    let other = input("shop", "admin", &irsa_tokens(), &params(few, &[]));
    let mounts = (0..8).map(|_| p.mount(&other));
    for result in futures::future::join_all(mounts).await {
        assert_eq!(text(&result.unwrap(), "bulk_s0"), "secret-0");
    }
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 2);
    assert_eq!(p.cached_identities(), 2);
    // Every data call was signed with credentials STS handed out, not moto's defaults.
    let sts: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == "AssumeRoleWithWebIdentity")
        .collect();
    let keys: Vec<&str> = sts
        .iter()
        .map(|c| between(&c.answer, "<AccessKeyId>", "</AccessKeyId>"))
        .collect();
    assert!(
        proxy
            .calls()
            .iter()
            .filter(|c| c.action != "AssumeRoleWithWebIdentity")
            .all(|c| keys.contains(&c.access_key.as_str()) && c.access_key != "testing")
    );
    let sts = &sts[0];
    assert_eq!(sts.form["RoleArn"], ROLE);
    assert_eq!(sts.form["WebIdentityToken"], FAKE_JWT);
    assert_eq!(sts.form["RoleSessionName"], "keymount-shop-web");
}

#[tokio::test]
async fn failures_have_codes_and_name_the_object() {
    let (moto, proxy) = bed().await;
    let sm = moto.secretsmanager();
    sm.create_secret()
        .name("present")
        .secret_string(r#"{"a":{"b":"c"},"n":1}"#)
        .send()
        .await
        .unwrap();
    let p = local_provider(&proxy);
    let mount = |objects: String, extra: Vec<(&'static str, &'static str)>| {
        let p = &p;
        async move {
            let mut ps = params(&objects, &[]);
            ps.extend(extra);
            p.mount(&input("shop", "web", &irsa_tokens(), &ps)).await
        }
    };
    let e = mount("- {objectName: present, objectType: secretsmanager}\n- {objectName: no/such/secret, objectType: secretsmanager}".into(), vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(
        e.to_string().contains("no/such/secret") && e.to_string().contains("objects[1]"),
        "{e}"
    );
    let e = mount(
        "- {objectName: /no/such/param, objectType: ssmparameter}".into(),
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.to_string().contains("/no/such/param"), "{e}");
    let e = mount("- {objectName: present, objectType: secretsmanager, jmesPath: [{path: a.x, objectAlias: x}]}".into(), vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(
        e.to_string().contains("a.x") && e.to_string().contains("present"),
        "{e}"
    );
    let e = mount("- {objectName: present, objectType: secretsmanager, jmesPath: [{path: n, objectAlias: x}]}".into(), vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = mount("- {objectName: present}".into(), vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("objects[0].objectType"), "{e}");

    // AccessDenied from AWS is PERMISSION_DENIED.
    proxy.fault(Rule {
        action: Some("GetSecretValue"),
        region: None,
        remaining: None,
        fault: Fault::AccessDenied,
    });
    let e = mount(
        "- {objectName: present, objectType: secretsmanager, objectVersionLabel: AWSCURRENT}"
            .into(),
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        e.to_string().contains("AccessDeniedException") && e.to_string().contains("present"),
        "{e}"
    );
    // An IAM policy without secretsmanager:BatchGetSecretValue: read one by one instead.
    proxy.clear_faults();
    proxy.fault(Rule {
        action: Some("BatchGetSecretValue"),
        region: None,
        remaining: None,
        fault: Fault::AccessDenied,
    });
    proxy.reset();
    let out = mount(
        "- {objectName: present, objectType: secretsmanager}".into(),
        vec![],
    )
    .await
    .unwrap();
    assert!(text(&out, "present").contains("\"c\""));
    assert_eq!(
        (
            proxy.count("BatchGetSecretValue"),
            proxy.count("GetSecretValue")
        ),
        (1, 1)
    );
    proxy.clear_faults();

    // What the pod or node lacks is said, with what to add.
    let objects = "- {objectName: present, objectType: secretsmanager}";
    let no_region = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &[("roleArn", ROLE), ("objects", objects)],
        ))
        .await
        .unwrap_err();
    assert_eq!(no_region.code(), Code::FailedPrecondition);
    assert!(
        no_region
            .to_string()
            .contains("topology.kubernetes.io/region"),
        "{no_region}"
    );
    let no_token = p
        .mount(&input("shop", "web", "", &params(objects, &[])))
        .await
        .unwrap_err();
    assert_eq!(no_token.code(), Code::FailedPrecondition);
    assert!(
        no_token.to_string().contains("audience: sts.amazonaws.com")
            && no_token.to_string().contains("tokenRequests"),
        "{no_token}"
    );
    let no_role = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &[("region", REGION), ("objects", objects)],
        ))
        .await
        .unwrap_err();
    assert_eq!(no_role.code(), Code::FailedPrecondition);
    assert!(no_role.to_string().contains("roleArn"), "{no_role}");
    let bad = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(objects, &[("usePodIdentity", "maybe")]),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.to_string().contains("usePodIdentity"), "{bad}");
    let wrong_region =
        "- {objectName: \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf\"}"
            .to_string();
    let e = mount(wrong_region, vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("eu-west-1"), "{e}");
    // No message carries a secret value or the token.
    for e in [&no_region, &no_token, &no_role, &bad] {
        assert!(!e.to_string().contains(FAKE_JWT));
    }
}
