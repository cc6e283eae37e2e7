//! Runs the built `nubis` binary like a user: configuration, output formats,
//! argument validation and exit codes, without a control plane.

use std::path::Path;
use std::process::{Command, Output};

fn nubis(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nubis"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run nubis")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn configure_writes_profile_and_list_shows_sources() {
    let home = tempfile::tempdir().unwrap();
    let out = nubis(
        home.path(),
        &[
            "configure",
            "--profile",
            "dev",
            "--endpoint",
            "http://127.0.0.1:7777",
            "--access-key-id",
            "AKDEV",
            "--secret-access-key",
            "supersecret1234",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = home.path().join(".config/nubis/config.toml");
    let written = std::fs::read_to_string(&cfg).unwrap();
    assert!(written.contains("[profiles.dev]"), "{written}");
    assert!(written.contains("AKDEV"));

    let out = nubis(
        home.path(),
        &[
            "configure",
            "list",
            "--profile",
            "dev",
            "--region",
            "r9",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = v["settings"].as_array().unwrap();
    let get = |n: &str| {
        settings
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .clone()
    };
    assert_eq!(get("endpoint")["value"], "http://127.0.0.1:7777");
    assert_eq!(get("endpoint")["source"], "profile");
    assert_eq!(get("region")["value"], "r9");
    assert_eq!(get("region")["source"], "flag");
    let secret = get("secret_access_key");
    assert!(!secret["value"].as_str().unwrap().contains("supersecret"));
    assert!(secret["value"].as_str().unwrap().ends_with("1234"));

    // Table output by default.
    let out = nubis(home.path(), &["configure", "list", "--profile", "dev"]);
    assert!(
        text(&out.stdout).starts_with("NAME"),
        "{}",
        text(&out.stdout)
    );
    // Delete it; deleting again is "not found".
    let out = nubis(home.path(), &["configure", "delete", "--profile", "dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!std::fs::read_to_string(&cfg).unwrap().contains("AKDEV"));
    let out = nubis(home.path(), &["configure", "delete", "--profile", "dev"]);
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn missing_credentials_exit_3_with_hint() {
    let home = tempfile::tempdir().unwrap();
    let out = nubis(home.path(), &["zones", "list"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("no credentials"), "{err}");
    assert!(err.contains("hint: run `nubis configure"), "{err}");
}

#[test]
fn event_ages_parse_before_credentials_are_needed() {
    // `--from -7d` is a value, not a flag: the command gets as far as
    // needing credentials (exit 3), not a usage error (exit 2).
    let home = tempfile::tempdir().unwrap();
    let out = nubis(
        home.path(),
        &["events", "list", "--from", "-7d", "--to", "-1h"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn unknown_profile_exits_3() {
    let home = tempfile::tempdir().unwrap();
    let out = nubis(home.path(), &["zones", "list", "--profile", "ghost"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("\"ghost\" not found"));
}

#[test]
fn unreachable_endpoint_exits_4() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let out = nubis(
        home.path(),
        &[
            "instances",
            "list",
            "--endpoint",
            &endpoint,
            "--access-key-id",
            "a",
            "--secret-access-key",
            "b",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot connect"));
}

#[test]
fn bad_arguments_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--count",
            "0",
        ][..],
        &["instances", "describe", "not-an-id"][..],
        &["frobnicate"][..],
        &["zones", "list", "-o", "xml"][..],
        &["events", "list", "--from", "yesterday"][..],
        &["events", "list", "--to", "2026-02-30"][..],
        &[
            "autoscaling",
            "create",
            "g",
            "--launch-template",
            "t",
            "--min",
            "0",
            "--max",
            "1",
        ][..],
        &["autoscaling", "set-desired-capacity", "g", "-1"][..],
        &[
            "autoscaling",
            "put-policy",
            "g",
            "p",
            "--type",
            "step",
            "--step",
            "1:2",
        ][..],
        &["autoscaling", "activities", "--max", "0"][..],
        &["autoscaling", "terminate-instance", "not-an-id"][..],
        &["autoscaling", "set-protection", "g"][..],
    ] {
        let out = nubis(home.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bad_config_file_exits_3() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join(".config/nubis/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, "[profiles.default]\nendpont = 1\n").unwrap();
    let out = nubis(home.path(), &["zones", "list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("is invalid"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_are_generated() {
    let home = tempfile::tempdir().unwrap();
    let out = nubis(home.path(), &["completions", "bash"]);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(
        script.contains("_nubis()"),
        "bash completion function missing"
    );
    assert!(script.contains("instances"));
    let out = nubis(home.path(), &["completions", "zsh"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("#compdef nubis"));
}
