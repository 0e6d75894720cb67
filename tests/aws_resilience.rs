//! The aws provider when AWS struggles, against a real moto server behind a proxy that
//! answers chosen calls with AWS's throttling and 5xx replies: retries with backoff, then
//! UNAVAILABLE; the failover region read only when the primary region fails.

mod aws_support;
mod support;

use aws_support::proxy::{Fault, Rule};
use aws_support::{args, bed, input, irsa_tokens, local_provider, params, sm, text};
use keymount::provider::Provider;
use keymount::provider::aws::AwsProvider;
use support::moto::REGION;
use tonic::Code;

#[tokio::test]
async fn throttling_is_retried_then_unavailable() {
    let (moto, proxy) = bed().await;
    moto.secretsmanager()
        .create_secret()
        .name("busy")
        .secret_string("busy-value")
        .send()
        .await
        .unwrap();
    let p = local_provider(&proxy);
    let objects = "- {objectName: busy, objectType: secretsmanager}";
    let tokens = irsa_tokens();
    p.mount(&input("shop", "web", &tokens, &params(objects, &[])))
        .await
        .unwrap();
    proxy.reset();
    proxy.fault(Rule {
        action: Some("BatchGetSecretValue"),
        region: None,
        remaining: Some(2),
        fault: Fault::Throttle,
    });
    let out = p
        .mount(&input("shop", "web", &tokens, &params(objects, &[])))
        .await
        .unwrap();
    assert_eq!(text(&out, "busy"), "busy-value");
    let calls = proxy.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.action == "BatchGetSecretValue")
            .count(),
        3
    );
    assert_eq!(calls.iter().filter(|c| c.faulted).count(), 2);

    proxy.reset();
    proxy.clear_faults();
    proxy.fault(Rule {
        action: Some("BatchGetSecretValue"),
        region: None,
        remaining: None,
        fault: Fault::Throttle,
    });
    let e = p
        .mount(&input("shop", "web", &tokens, &params(objects, &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.to_string().contains("ThrottlingException") && e.to_string().contains("busy"),
        "{e}"
    );
    assert_eq!(
        proxy.count("BatchGetSecretValue"),
        3,
        "the retry budget is 3 attempts"
    );

    proxy.clear_faults();
    proxy.fault(Rule {
        action: None,
        region: None,
        remaining: None,
        fault: Fault::ServerError,
    });
    let e = p
        .mount(&input("shop", "web", &tokens, &params(objects, &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    // A closed port: connection failures are UNAVAILABLE too.
    let closed = AwsProvider::new(args("http://127.0.0.1:9"), None, "test-node");
    let e = closed
        .mount(&input("shop", "web", &tokens, &params(objects, &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
}

#[tokio::test]
async fn failover_region_is_read_only_when_the_primary_fails() {
    let (moto, proxy) = bed().await;
    sm(&moto, REGION)
        .create_secret()
        .name("shared/db")
        .secret_string("primary-value")
        .send()
        .await
        .unwrap();
    let west = sm(&moto, "us-west-2");
    west.create_secret()
        .name("shared/db")
        .secret_string("failover-value")
        .send()
        .await
        .unwrap();
    west.create_secret()
        .name("replica/api")
        .secret_string("replica-api-value")
        .send()
        .await
        .unwrap();
    sm(&moto, REGION)
        .create_secret()
        .name("api")
        .secret_string("primary-api-value")
        .send()
        .await
        .unwrap();
    let objects = "- {objectName: shared/db, objectType: secretsmanager}\n- {objectName: api, objectType: secretsmanager, objectAlias: api, failoverObject: {objectName: replica/api}}";
    let extra = [("failoverRegion", "us-west-2")];
    let p = local_provider(&proxy);
    let out = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(objects, &extra),
        ))
        .await
        .unwrap();
    assert_eq!(text(&out, "shared_db"), "primary-value");
    assert_eq!(text(&out, "api"), "primary-api-value");
    assert_eq!(
        proxy.count_region("us-west-2"),
        0,
        "ASCP reads both regions; keymount only on failure"
    );

    proxy.fault(Rule {
        action: None,
        region: Some(REGION.into()),
        remaining: None,
        fault: Fault::ServerError,
    });
    let out = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(objects, &extra),
        ))
        .await
        .unwrap();
    assert_eq!(text(&out, "shared_db"), "failover-value");
    assert_eq!(
        text(&out, "api"),
        "replica-api-value",
        "failoverObject names the replica"
    );
    assert!(proxy.count_region("us-west-2") > 0);

    // STS down for the primary region (all attempts): the failover region's STS answers,
    // and the data is still read from the primary region.
    proxy.clear_faults();
    proxy.reset();
    proxy.fault(Rule {
        action: Some("AssumeRoleWithWebIdentity"),
        region: None,
        remaining: Some(3),
        fault: Fault::ServerError,
    });
    let fresh = local_provider(&proxy);
    let out = fresh
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(objects, &extra),
        ))
        .await
        .unwrap();
    assert_eq!(text(&out, "shared_db"), "primary-value");
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 4);
    assert_eq!(proxy.count_region("us-west-2"), 0);

    // A secret that is missing in the primary region is NOT_FOUND: no failover.
    proxy.clear_faults();
    proxy.reset();
    let missing = "- {objectName: only/west, objectType: secretsmanager}";
    west.create_secret()
        .name("only/west")
        .secret_string("x")
        .send()
        .await
        .unwrap();
    let e = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(missing, &extra),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert_eq!(proxy.count_region("us-west-2"), 0);
}
