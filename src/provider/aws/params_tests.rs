//! Unit tests of the `aws` class parameters.

use super::*;

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn err(pairs: &[(&str, &str)]) -> String {
    MountParameters::parse(&attrs(pairs), 0o644)
        .unwrap_err()
        .to_string()
}

const OBJECTS: &str = r#"
- objectName: "prod/db"
  objectType: secretsmanager
  objectAlias: db.json
  filePermission: "0600"
  jmesPath:
    - {path: username, objectAlias: user}
- objectName: arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-AbCdEf
- objectName: /app/feature
  objectType: ssmparameter
  objectVersion: 3
- objectName: arn:aws:ssm:eu-west-1:123456789012:parameter/app/color
  objectVersionLabel: blue
  objectAlias: color
"#;

#[test]
fn every_parameter_is_read_like_ascp() {
    let p = MountParameters::parse(
        &attrs(&[
            ("region", "eu-west-1"),
            ("failoverRegion", "eu-central-1"),
            ("usePodIdentity", "true"),
            ("preferredAddressType", "IPv6"),
            ("objects", OBJECTS),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            ("csi.storage.k8s.io/serviceAccount.name", "web"),
        ]),
        0o644,
    )
    .unwrap();
    assert_eq!(p.region.as_deref(), Some("eu-west-1"));
    assert!(p.use_pod_identity);
    assert_eq!(p.address_type, AddressType::Ipv6);
    let o = &p.objects;
    assert_eq!(o[0].file_name, "db.json");
    assert_eq!(o[0].mode, 0o600);
    assert_eq!(o[0].jmes[0].file_name, "user");
    assert_eq!(
        o[0].jmes[0].mode, 0o600,
        "jmesPath files inherit the object's mode"
    );
    assert_eq!(o[1].primary.kind, ObjectType::SecretsManager);
    assert_eq!(
        o[1].file_name,
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-AbCdEf"
    );
    assert_eq!(o[2].file_name, "_app_feature");
    assert_eq!(o[2].primary.version_id.as_deref(), Some("3"));
    assert_eq!(o[3].primary.kind, ObjectType::SsmParameter);
    assert_eq!(o[3].primary.version_label.as_deref(), Some("blue"));
    assert_eq!(o[3].failover, o[3].primary);
    p.check_arn_regions("eu-west-1").unwrap();
    let e = p.check_arn_regions("us-east-1").unwrap_err().to_string();
    assert!(
        e.contains("objects[1].objectName") && e.contains("eu-west-1"),
        "{e}"
    );
}

#[test]
fn path_translation_forms() {
    let objects = "- {objectName: /a/b/c, objectType: ssmparameter}";
    let name = |t: &str| {
        MountParameters::parse(
            &attrs(&[("pathTranslation", t), ("objects", objects)]),
            0o644,
        )
        .unwrap()
        .objects[0]
            .file_name
            .clone()
    };
    assert_eq!(name(""), "_a_b_c");
    assert_eq!(name("-"), "-a-b-c");
    assert_eq!(name("False"), "a/b/c");
    assert_eq!(name("true"), "_a_b_c");
    let e = err(&[("pathTranslation", "--"), ("objects", objects)]);
    assert!(e.contains("pathTranslation"), "{e}");
    let up = "- {objectName: ../../etc/passwd, objectType: ssmparameter}";
    let e = err(&[("pathTranslation", "False"), ("objects", up)]);
    assert!(e.contains("objects[0].objectAlias"), "{e}");
}

#[test]
fn failover_objects_need_alias_and_region() {
    let objects = "- {objectName: db, objectType: secretsmanager, objectAlias: db, failoverObject: {objectName: arn:aws:secretsmanager:eu-central-1:1:secret:db-x}}";
    let p = MountParameters::parse(
        &attrs(&[
            ("region", "eu-west-1"),
            ("failoverRegion", "eu-central-1"),
            ("objects", objects),
        ]),
        0o644,
    )
    .unwrap();
    assert_eq!(
        p.objects[0].failover.name,
        "arn:aws:secretsmanager:eu-central-1:1:secret:db-x"
    );
    p.check_arn_regions("eu-west-1").unwrap();
    assert!(err(&[("objects", objects)]).contains("failoverRegion"));
    let no_alias =
        "- {objectName: db, objectType: secretsmanager, failoverObject: {objectName: db2}}";
    assert!(
        err(&[("failoverRegion", "x"), ("objects", no_alias)]).contains("objects[0].objectAlias")
    );
    let e = err(&[
        ("region", "a"),
        ("failoverRegion", "a"),
        ("objects", objects),
    ]);
    assert!(e.contains("failoverRegion") && e.contains("differ"), "{e}");
}

#[test]
fn bad_objects_are_named() {
    let e = err(&[("objects", "- {objectName: db}")]);
    assert!(
        e.contains("objects[0].objectType") && e.contains("ARN"),
        "{e}"
    );
    let e = err(&[("objects", "- {objectName: db, objectType: vault}")]);
    assert!(e.contains("objects[0].objectType"), "{e}");
    let e = err(&[("objects", "- {objectName: arn:aws:s3:::bucket/x}")]);
    assert!(e.contains("s3"), "{e}");
    let e = err(&[(
        "objects",
        "- {objectName: arn:aws:ssm:r:1:parameter/x, objectType: secretsmanager}",
    )]);
    assert!(e.contains("objects[0].objectType"), "{e}");
    let e = err(&[(
        "objects",
        "- {objectName: a, objectType: ssmparameter, objectVersion: '2', objectVersionLabel: l}",
    )]);
    assert!(e.contains("objects[0].objectVersionLabel"), "{e}");
    let e = err(&[(
        "objects",
        "- {objectName: a, objectType: ssmparameter, objectVersion: latest}",
    )]);
    assert!(e.contains("objects[0].objectVersion"), "{e}");
    let e = err(&[(
        "objects",
        "- {objectName: a, objectType: ssmparameter, filePermission: '0999'}",
    )]);
    assert!(e.contains("objects[0].filePermission"), "{e}");
    let dup = "- {objectName: a, objectType: ssmparameter}\n- {objectName: a, objectType: secretsmanager}";
    let e = err(&[("objects", dup)]);
    assert!(
        e.contains("objects[1].objectAlias") && e.contains("twice"),
        "{e}"
    );
    let jdup =
        "- {objectName: a, objectType: secretsmanager, jmesPath: [{path: x, objectAlias: a}]}";
    assert!(err(&[("objects", jdup)]).contains("objects[0].jmesPath[0].objectAlias"));
    let bad_path =
        "- {objectName: a, objectType: secretsmanager, jmesPath: [{path: 'a[', objectAlias: b}]}";
    assert!(err(&[("objects", bad_path)]).contains("objects[0].jmesPath[0].path"));
    let typo = "- {objectName: a, objectType: secretsmanager, objectAlais: b}";
    assert!(err(&[("objects", typo)]).contains("objectAlais"));
    assert!(err(&[("region", "r")]).contains("objects"));
    let e = err(&[
        ("usePodIdentity", "yes"),
        ("objects", "- {objectName: a, objectType: ssmparameter}"),
    ]);
    assert!(e.contains("usePodIdentity"), "{e}");
}
