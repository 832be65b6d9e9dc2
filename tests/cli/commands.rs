//! `hash-key`, `schema`, and `--help` for every command (SPEC §2).

use crate::common::keyway;

const FOO_HASH: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

#[test]
fn hash_key_prints_the_sha256_form() {
    let out = keyway(&["hash-key", "foo"], &[], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("{FOO_HASH}\n"));
}

#[test]
fn hash_key_reads_stdin_with_dash() {
    let out = keyway(&["hash-key", "-"], &[], Some(b"foo"));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim_end(), FOO_HASH);
    // A trailing newline (echo without -n) is not part of the key.
    let out = keyway(&["hash-key", "-"], &[], Some(b"foo\n"));
    assert_eq!(out.stdout.trim_end(), FOO_HASH);
    // An empty key is refused.
    let out = keyway(&["hash-key", "-"], &[], Some(b""));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let out = keyway(&["schema"], &[], None);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert!(
        v["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("json-schema.org")),
        "{v:#}"
    );
    let props = v["properties"].as_object().expect("properties");
    for key in [
        "routes",
        "upstreams",
        "consumers",
        "authenticators",
        "listen",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}: {v:#}");
    }
}

/// Command names from the `Commands:` section of `keyway --help`.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_has_help() {
    let top = keyway(&["--help"], &[], None);
    assert_eq!(top.code, 0, "{top:?}");
    let names = commands(&top.stdout);
    for expected in ["run", "demo", "check", "hash-key", "schema"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for name in &names {
        let out = keyway(&[name, "--help"], &[], None);
        assert_eq!(out.code, 0, "keyway {name} --help: {out:?}");
        assert!(
            out.stdout.contains(&format!("Usage: keyway {name}")),
            "keyway {name} --help:\n{}",
            out.stdout
        );
    }
    let out = keyway(&["check", "--help"], &[], None);
    for flag in ["--config", "--probe", "--json"] {
        assert!(out.stdout.contains(flag), "check --help lacks {flag}");
    }
    let out = keyway(&["demo", "--help"], &[], None);
    for flag in ["--listen", "--admin-listen"] {
        assert!(out.stdout.contains(flag), "demo --help lacks {flag}");
    }
    let out = keyway(&["run", "--help"], &[], None);
    assert!(out.stdout.contains("--log-format"), "{}", out.stdout);
    // An unknown command is a usage error, not a panic.
    let out = keyway(&["frobnicate"], &[], None);
    assert_eq!(out.code, 2, "{out:?}");
}
