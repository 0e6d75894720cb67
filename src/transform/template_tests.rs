//! Unit tests of the template subset: the ESO/VSO forms, functions, trimming, and errors that
//! name positions but never values.

use super::*;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Redacted<Vec<u8>>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Redacted::new(v.as_bytes().to_vec())))
        .collect()
}

fn render(template: &str, pairs: &[(&str, &str)]) -> Result<String, TemplateError> {
    let t = Template::parse(template)?;
    t.render(&data(pairs), 1 << 20)
        .map(|b| String::from_utf8(b.expose().clone()).unwrap())
}

#[test]
fn fields_index_and_text() {
    let d = [
        ("username", "app"),
        ("password", "s3cr3t"),
        ("db/host", "db.local"),
    ];
    assert_eq!(
        render(
            "postgres://{{ .username }}:{{ .password }}@{{ index . \"db/host\" }}:5432/app",
            &d
        )
        .unwrap(),
        "postgres://app:s3cr3t@db.local:5432/app"
    );
    assert_eq!(render("{{.username}}", &d).unwrap(), "app");
    // Two operands, not a chain: `.a .b` is not `.a.b`.
    assert_eq!(
        render("{{ print .username \"@\" .password }}", &d).unwrap(),
        "app@s3cr3t"
    );
}

#[test]
fn pipelines_functions_and_parentheses() {
    let d = [
        ("user", "u"),
        ("pw", "p"),
        ("cfg", r#"{"port": 5432, "tls": {"mode": "verify"}}"#),
    ];
    assert!(
        render("{{ x := 1 }}", &d)
            .unwrap_err()
            .reason
            .contains("unexpected")
    );
    assert!(
        render("{{ (printf) }}", &d)
            .unwrap_err()
            .reason
            .contains("unknown function")
    );
    assert_eq!(render(r#"{{ .user | upper }}"#, &d).unwrap(), "U");
    let docker = r#"{"auths":{"r.io":{"auth":"{{ printf "%s:%s" .user .pw | b64enc }}"}}}"#;
    assert!(
        render(docker, &d)
            .unwrap_err()
            .reason
            .contains("unknown function \"printf\"")
    );
    let docker = r#"{"auths":{"r.io":{"auth":"{{ print .user ":" .pw | b64enc }}"}}}"#;
    assert_eq!(
        render(docker, &d).unwrap(),
        r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#
    );
    assert_eq!(render(r#"{{ b64enc "u:p" }}"#, &d).unwrap(), "dTpw");
    assert_eq!(render(r#"{{ .pw | b64enc | b64dec }}"#, &d).unwrap(), "p");
    assert_eq!(render(r#"{{ (fromJson .cfg).port }}"#, &d).unwrap(), "5432");
    assert_eq!(
        render(r#"{{ index (fromJson .cfg) "tls" "mode" }}"#, &d).unwrap(),
        "verify"
    );
    assert_eq!(
        render(r#"{{ (fromJson .cfg).tls | toJson }}"#, &d).unwrap(),
        r#"{"mode":"verify"}"#
    );
    assert_eq!(render(r#"{{ .user | quote }}"#, &d).unwrap(), r#""u""#);
    assert_eq!(render(r#"{{ default "5432" .port }}"#, &d).unwrap(), "5432");
    assert_eq!(render(r#"{{ .port | default "x" }}"#, &d).unwrap(), "x");
    assert_eq!(render(r#"{{ default "x" .user }}"#, &d).unwrap(), "u");
    assert_eq!(render(r#"{{ "  a  " | trim }}"#, &d).unwrap(), "a");
    assert_eq!(render(r#"{{ replace "p" "P" .pw }}"#, &d).unwrap(), "P");
    assert_eq!(
        render(
            r#"{{ trimPrefix "u" .user }}-{{ trimSuffix "x" "ax" }}"#,
            &d
        )
        .unwrap(),
        "-a"
    );
}

#[test]
fn trim_markers_remove_whitespace_beside_the_action() {
    let d = [("a", "1"), ("b", "2")];
    assert_eq!(render("{{ .a }}  \n  {{- .b }}", &d).unwrap(), "12");
    assert_eq!(render("{{ .a -}}\n  x", &d).unwrap(), "1x");
    assert_eq!(render("a-{{ .a }}-b", &d).unwrap(), "a-1-b");
}

#[test]
fn errors_name_line_column_and_object_but_never_a_value() {
    let d = [("password", "hunter2-value")];
    let e = render("line one\n  {{ .missing }}", &d).unwrap_err();
    assert_eq!((e.line, e.column), (2, 3));
    assert!(e.reason.contains("\"missing\""), "{e}");
    let e = render("{{ .password", &d).unwrap_err();
    assert!(e.reason.contains("unclosed"), "{e}");
    let e = render("{{ .password | nosuch }}", &d).unwrap_err();
    assert!(e.reason.contains("unknown function \"nosuch\""), "{e}");
    for t in [
        "{{ .password | b64dec }}",
        "{{ fromJson .password }}",
        "{{ .password.x }}",
        "{{ index .password \"x\" }}",
    ] {
        let e = render(t, &d).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{t}: {e}");
    }
    let e = render("{{ . }}", &d).unwrap_err();
    assert!(e.reason.contains("whole data"), "{e}");
}

#[test]
fn output_past_the_limit_is_refused() {
    let t = Template::parse("{{ .a }}{{ .a }}").unwrap();
    let e = t.render(&data(&[("a", "0123456789")]), 15).unwrap_err();
    assert!(e.reason.contains("larger than 15 bytes"), "{e}");
}

#[test]
fn functions_that_grow_their_input_are_refused_before_they_build_past_the_limit() {
    let d = [("a", "aaaaaaaaaa")];
    let t = |s: &str| Template::parse(s).unwrap().render(&data(&d), 64);
    let e = t(r#"{{ replace "a" "0123456789" .a }}"#).unwrap_err();
    assert!(
        e.reason
            .contains("replace: the result would be larger than 64 bytes"),
        "{e}"
    );
    let e = t("{{ print .a .a .a .a .a .a .a }}").unwrap_err();
    assert!(
        e.reason
            .contains("print: the result is larger than 64 bytes"),
        "{e}"
    );
    let e = t("{{ print .a .a .a .a .a | b64enc }}").unwrap_err();
    assert!(
        e.reason
            .contains("b64enc: the result is larger than 64 bytes"),
        "{e}"
    );
    let e = t("x\n  {{ .a }}{{ .a }}{{ .a }}{{ .a }}{{ .a }}{{ .a }}{{ .a }}").unwrap_err();
    assert_eq!(
        (e.line, e.column),
        (2, 51),
        "the seventh action crossed the limit: {e}"
    );
}
