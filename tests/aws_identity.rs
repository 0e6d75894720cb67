//! The aws provider's identities against a real moto server (behind a counting proxy): IRSA
//! with a real ServiceAccount token, role annotation and node region label from the test
//! kube-apiserver, and EKS Pod Identity with a stand-in agent.

mod aws_support;
mod support;

use aws_support::{
    FAKE_JWT, PodIdentityAgent, STS, args, bed, between, input, irsa_tokens, params, text,
    tokens_json,
};
use keymount::provider::Provider;
use keymount::provider::aws::AwsProvider;
use support::moto::REGION;
use tonic::Code;

#[tokio::test]
async fn irsa_with_a_real_token_the_role_annotation_and_the_node_region() {
    use k8s_openapi::api::core::v1::{Node, ServiceAccount};
    use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
    let kube = support::kube::TestKube::get();
    let (moto, proxy) = bed().await;
    moto.secretsmanager()
        .create_secret()
        .name("irsa/db")
        .secret_string("irsa-value")
        .send()
        .await
        .unwrap();
    let ns = kube.namespace("aws-irsa").await;
    let role = "arn:aws:iam::123456789012:role/shop-web";
    kube.create_service_account(&ns, "web", &[("eks.amazonaws.com/role-arn", role)])
        .await;
    kube.create_service_account(&ns, "bare", &[]).await;
    let node = format!("{ns}-node");
    let labels = [(
        "topology.kubernetes.io/region".to_owned(),
        REGION.to_owned(),
    )]
    .into();
    let meta = ObjectMeta {
        name: Some(node.clone()),
        labels: Some(labels),
        ..Default::default()
    };
    Api::<Node>::all(kube.client())
        .create(
            &PostParams::default(),
            &Node {
                metadata: meta,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let token = kube.request_token(&ns, "web", &[STS], None).await;

    let p = AwsProvider::new(args(&proxy.endpoint), Some(kube.client()), &node);
    let objects = "- {objectName: irsa/db, objectType: secretsmanager}";
    // No region parameter and no node default: the node's label decides.
    let class = [("objects", objects)];
    let out = p
        .mount(&input(&ns, "web", &tokens_json(&[(STS, &token)]), &class))
        .await
        .unwrap();
    assert_eq!(text(&out, "irsa_db"), "irsa-value");
    let sts = proxy
        .calls()
        .into_iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .unwrap();
    assert_eq!(sts.form["RoleArn"], role);
    assert_eq!(
        sts.form["WebIdentityToken"], token,
        "the pod's own token from the API server"
    );
    assert_eq!(sts.form["RoleSessionName"], format!("keymount-{ns}-web"));
    let key = between(&sts.answer, "<AccessKeyId>", "</AccessKeyId>");
    let data: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == "BatchGetSecretValue")
        .collect();
    assert!(
        !data.is_empty()
            && data
                .iter()
                .all(|c| c.access_key == key && c.region == REGION)
    );

    // A ServiceAccount without the annotation: the message says what to add.
    let bare_token = kube.request_token(&ns, "bare", &[STS], None).await;
    let bare = input(&ns, "bare", &tokens_json(&[(STS, &bare_token)]), &class);
    let e = p.mount(&bare).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.to_string().contains(&format!("{ns}/bare"))
            && e.to_string()
                .contains("eks.amazonaws.com/role-arn: arn:aws:iam::"),
        "{e}"
    );
    assert!(!e.to_string().contains(&bare_token));
    // Once annotated, the next mount finds the role (watch or confirming GET).
    let patch =
        serde_json::json!({"metadata": {"annotations": {"eks.amazonaws.com/role-arn": role}}});
    Api::<ServiceAccount>::namespaced(kube.client(), &ns)
        .patch("bare", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let out = p.mount(&bare).await.unwrap();
    assert_eq!(text(&out, "irsa_db"), "irsa-value");
    // A missing ServiceAccount, and a node without the region label.
    let e = p
        .mount(&input(&ns, "ghost", &tokens_json(&[(STS, &token)]), &class))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let unlabelled = AwsProvider::new(args(&proxy.endpoint), Some(kube.client()), "no-such-node");
    let e = unlabelled
        .mount(&input(&ns, "web", &tokens_json(&[(STS, &token)]), &class))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("no-such-node"), "{e}");
}

#[tokio::test]
async fn pod_identity_uses_the_agent_with_the_pods_token() {
    let (moto, proxy) = bed().await;
    moto.secretsmanager()
        .create_secret()
        .name("pi/secret")
        .secret_string("pod-identity-value")
        .send()
        .await
        .unwrap();
    let pod_token = "pod-identity-jwt.for-shop-web";
    let agent = PodIdentityAgent::start(pod_token, "ASIAPODIDENTITYKEY01").await;
    let mut a = args(&proxy.endpoint);
    a.aws_pod_identity_endpoint = Some(agent.endpoint.clone());
    let p = AwsProvider::new(a, None, "test-node");
    let objects = "- {objectName: pi/secret, objectType: secretsmanager}";
    let extra = [("usePodIdentity", "true"), ("preferredAddressType", "ipv4")];
    let tokens = tokens_json(&[("pods.eks.amazonaws.com", pod_token), (STS, FAKE_JWT)]);
    let out = p
        .mount(&input("shop", "web", &tokens, &params(objects, &extra)))
        .await
        .unwrap();
    assert_eq!(text(&out, "pi_secret"), "pod-identity-value");
    assert_eq!(
        *agent.seen.lock().unwrap(),
        [pod_token],
        "the pod token is the Authorization header"
    );
    assert!(
        proxy
            .calls()
            .iter()
            .all(|c| c.access_key == "ASIAPODIDENTITYKEY01"),
        "{:?}",
        proxy.calls()
    );
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 0);
    p.mount(&input("shop", "web", &tokens, &params(objects, &extra)))
        .await
        .unwrap();
    assert_eq!(
        agent.seen.lock().unwrap().len(),
        1,
        "credentials are cached"
    );

    let other = tokens_json(&[("pods.eks.amazonaws.com", "another-pods-token")]);
    let e = p
        .mount(&input("shop", "other", &other, &params(objects, &extra)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        e.to_string().contains(&agent.endpoint) && !e.to_string().contains("another-pods-token"),
        "{e}"
    );
    let none = p
        .mount(&input(
            "shop",
            "web",
            &irsa_tokens(),
            &params(objects, &extra),
        ))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::FailedPrecondition);
    assert!(
        none.to_string().contains("pods.eks.amazonaws.com"),
        "{none}"
    );
}
