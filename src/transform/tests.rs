//! Unit tests of extract and templates on a provider's files.

use super::*;
use crate::redact::Redacted;

fn file(path: &str, contents: &str) -> Payload {
    Payload {
        path: path.into(),
        mode: 0o640,
        contents: Redacted::new(contents.as_bytes().to_vec()),
    }
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn run(
    pairs: &[(&str, &str)],
    files: Vec<Payload>,
) -> Result<BTreeMap<String, (u32, String)>, TransformError> {
    let out = apply("shop/db", Some(&annotations(pairs)), files, 0o644, 4096)?;
    Ok(out
        .into_iter()
        .map(|f| {
            (
                f.path,
                (
                    f.mode,
                    String::from_utf8(f.contents.expose().clone()).unwrap(),
                ),
            )
        })
        .collect())
}

#[test]
fn extract_makes_one_file_per_key_strings_as_text_others_as_json() {
    let json = r#"{"user": "app", "password": "pw", "port": 5432, "tls": true, "opts": {"a": [1, 2]}, "none": null}"#;
    let out = run(
        &[(EXTRACT_ANNOTATION, "db")],
        vec![file("db", json), file("other", "x")],
    )
    .unwrap();
    let names: Vec<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["none", "opts", "other", "password", "port", "tls", "user"]
    );
    assert_eq!(out["user"], (0o640, "app".into()));
    assert_eq!(out["port"].1, "5432");
    assert_eq!(out["tls"].1, "true");
    assert_eq!(out["none"].1, "null");
    assert_eq!(out["opts"].1, r#"{"a":[1,2]}"#);
}

#[test]
fn extract_of_non_json_or_a_non_object_names_the_object_and_never_the_content() {
    let e = run(
        &[(EXTRACT_ANNOTATION, "db")],
        vec![file("db", "hunter2 is not json")],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("\"db\"") && e.to_string().contains("not a JSON object"),
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = run(
        &[(EXTRACT_ANNOTATION, "db")],
        vec![file("db", "[\"hunter2\"]")],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("it is an array") && !e.to_string().contains("hunter2"),
        "{e}"
    );
    let e = run(&[(EXTRACT_ANNOTATION, "absent")], vec![file("db", "{}")]).unwrap_err();
    assert!(matches!(e, TransformError::ExtractMissing { .. }), "{e}");
}

#[test]
fn templates_add_files_with_their_modes_or_replace_the_sources() {
    let templates = r#"
- name: .pgpass
  mode: "0600"
  template: "db:5432:app:{{ .user }}:{{ .password }}"
- name: dsn
  template: postgres://{{ .user }}:{{ .password }}@db/app
- name: numeric-mode
  mode: 384
  template: x
"#;
    let json = r#"{"user": "app", "password": "pw"}"#;
    let out = run(
        &[
            (EXTRACT_ANNOTATION, "db"),
            (TEMPLATES_ANNOTATION, templates),
        ],
        vec![file("db", json)],
    )
    .unwrap();
    assert_eq!(out[".pgpass"], (0o600, "db:5432:app:app:pw".into()));
    assert_eq!(out["dsn"], (0o644, "postgres://app:pw@db/app".into()));
    assert_eq!(out["numeric-mode"].0, 0o600);
    assert!(out.contains_key("user"), "sources kept by default");
    let out = run(
        &[
            (EXTRACT_ANNOTATION, "db"),
            (TEMPLATES_ANNOTATION, templates),
            (SOURCES_ANNOTATION, "drop"),
        ],
        vec![file("db", json)],
    )
    .unwrap();
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        [".pgpass", "dsn", "numeric-mode"]
    );
}

#[test]
fn bad_settings_are_refused_naming_class_annotation_and_template() {
    let e = run(
        &[(TEMPLATES_ANNOTATION, "- name: a\n  template: \"{{ .x \"")],
        vec![file("x", "1")],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("shop/db")
            && e.to_string().contains("template \"a\"")
            && e.to_string().contains("unclosed"),
        "{e}"
    );
    let e = run(&[(TEMPLATES_ANNOTATION, "name: a")], vec![file("x", "1")]).unwrap_err();
    assert!(e.to_string().contains(TEMPLATES_ANNOTATION), "{e}");
    let e = run(
        &[(
            TEMPLATES_ANNOTATION,
            "- {name: a, template: x, mode: \"0999\"}",
        )],
        vec![file("x", "1")],
    )
    .unwrap_err();
    assert!(e.to_string().contains("not octal"), "{e}");
    let e = run(
        &[(TEMPLATES_ANNOTATION, "- {name: x, template: y}")],
        vec![file("x", "1")],
    )
    .unwrap_err();
    assert_eq!(
        e,
        TransformError::Duplicate {
            class: "shop/db".into(),
            name: "x".into()
        }
    );
    let e = run(
        &[(
            TEMPLATES_ANNOTATION,
            "- {name: big, template: \"{{ .x }}{{ .x }}\"}",
        )],
        vec![file("x", &"a".repeat(3000))],
    )
    .unwrap_err();
    assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
    let e = run(&[(SOURCES_ANNOTATION, "maybe")], vec![file("x", "1")]).unwrap_err();
    assert!(e.to_string().contains("neither keep nor drop"), "{e}");
    let e = apply(
        "shop/db",
        Some(&annotations(&[(EXTRACT_ANNOTATION, "x")])),
        Vec::new(),
        0o644,
        10,
    )
    .unwrap_err();
    assert!(matches!(e, TransformError::NoFiles { .. }));
}

#[test]
fn a_class_without_the_annotations_is_not_transformed() {
    assert!(!wanted(None));
    assert!(!wanted(Some(&annotations(&[(
        "keymount.io/rotation-poll-interval",
        "1m"
    )]))));
    assert!(wanted(Some(&annotations(&[(EXTRACT_ANNOTATION, "db")]))));
}

#[test]
fn extract_of_a_whole_vault_response_takes_the_secrets_data() {
    let kv2 = r#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":{"data":{"user":"app","port":5432},"metadata":{"version":3}},"warnings":null}"#;
    let out = run(&[(EXTRACT_ANNOTATION, "db")], vec![file("db", kv2)]).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["port", "user"]);
    assert_eq!(out["port"].1, "5432");
    let kv1 = r#"{"request_id":"r","lease_id":"","lease_duration":2764800,"data":{"user":"app"}}"#;
    let out = run(&[(EXTRACT_ANNOTATION, "db")], vec![file("db", kv1)]).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["user"]);
}
