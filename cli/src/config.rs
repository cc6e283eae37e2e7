//! Profiles and settings resolution.
//!
//! Owns the on-disk profile file (`~/.config/nubis/config.toml`, or
//! `$XDG_CONFIG_HOME/nubis/config.toml`, or `--config`/`NUBIS_CONFIG`) and the
//! precedence rules that turn flags, environment variables and a profile into
//! the [`Settings`] a command runs with:
//!
//! 1. command-line flags (`--endpoint`, `--region`, `--access-key-id`, ...),
//! 2. environment variables (`NUBIS_ENDPOINT`, `NUBIS_REGION`,
//!    `NUBIS_ACCESS_KEY_ID`, `NUBIS_SECRET_ACCESS_KEY`, `NUBIS_CA_FILE`),
//! 3. the selected profile (`--profile`, else `NUBIS_PROFILE`, else `default`),
//! 4. built-in defaults (endpoint `http://127.0.0.1:50051`, region `nubis-local-1`).
//!
//! An endpoint may list several control-plane replicas separated by commas
//! (`http://cp1:50051,http://cp2:50051`): the client dials them in turn and
//! uses the first that answers ([`crate::client`]).
//!
//! File format:
//!
//! ```toml
//! [profiles.default]
//! endpoint = "http://127.0.0.1:50051"
//! region = "nubis-local"
//! access_key_id = "NKIA..."
//! secret_access_key = "..."
//! # https:// endpoints: the CA that signed the control plane's certificate
//! # (default: the system's trust store)
//! ca_file = "/etc/nubis/tls/server-ca.pem"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// Endpoint used when nothing else names one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";
/// Region used when nothing else names one.
pub const DEFAULT_REGION: &str = "nubis-local-1";
/// Profile used when neither `--profile` nor `NUBIS_PROFILE` names one.
pub const DEFAULT_PROFILE: &str = "default";

/// One named profile; every field is optional so a profile may set only some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// gRPC endpoint of the control plane, e.g. `http://127.0.0.1:50051`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Access key id of the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key of the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// CA (PEM file) that signed an `https://` endpoint's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// The whole profile file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

impl ConfigFile {
    /// Parses the file's text; `path` is only used in the error.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CliError> {
        toml::from_str(text).map_err(|source| CliError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads the file, or an empty configuration when it does not exist.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(CliError::ConfigIo {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the file atomically (temp file + rename), mode 0600 since it
    /// holds secrets; creates the parent directory.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| CliError::ConfigIo {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = toml::to_string_pretty(self).map_err(|e| CliError::ConfigIo {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let tmp = path.with_extension(format!("toml.tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Values given on the command line (global flags). `None` = not given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--access-key-id`.
    pub access_key_id: Option<String>,
    /// `--secret-access-key`.
    pub secret_access_key: Option<String>,
    /// `--ca-file`.
    pub ca_file: Option<String>,
}

/// Where a resolved value came from (shown by `nubis configure list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The profile file.
    Profile,
    /// A built-in default.
    Default,
    /// Not set anywhere.
    Unset,
}

/// A resolved value with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The value, if any.
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// Everything a command needs to talk to the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Path of the profile file consulted.
    pub config_path: PathBuf,
    /// Name of the selected profile.
    pub profile: String,
    /// Whether the selected profile exists in the file.
    pub profile_found: bool,
    /// Control-plane endpoint.
    pub endpoint: Resolved,
    /// Region.
    pub region: Resolved,
    /// Access key id.
    pub access_key_id: Resolved,
    /// Secret access key.
    pub secret_access_key: Resolved,
    /// CA file for `https://` endpoints (unset: the system's roots).
    pub ca_file: Resolved,
}

/// Credentials of an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl Settings {
    /// The endpoint (always set: a default exists); several replicas are
    /// separated by commas (see [`Settings::endpoints`]).
    pub fn endpoint(&self) -> &str {
        self.endpoint.value.as_deref().unwrap_or(DEFAULT_ENDPOINT)
    }

    /// Every endpoint of [`Settings::endpoint`], in the order to try them.
    pub fn endpoints(&self) -> Vec<&str> {
        split_endpoints(self.endpoint())
    }

    /// TLS settings for the endpoint: `None` unless it is `https://` and a
    /// CA file is set (then the file is read; an unreadable one is named).
    pub fn client_tls(&self) -> Result<Option<nubis_proto::transport::ClientTls>, CliError> {
        let Some(path) = self.ca_file.value.as_deref() else {
            return Ok(None);
        };
        if !self.endpoints().iter().any(|e| e.starts_with("https://")) {
            return Ok(None);
        }
        let pem = std::fs::read(path).map_err(|source| CliError::ReadFile {
            path: PathBuf::from(path),
            source,
        })?;
        Ok(Some(nubis_proto::transport::ClientTls {
            ca_pem: Some(pem),
            ..Default::default()
        }))
    }

    /// The credentials, or an error that says how to provide them.
    pub fn credentials(&self) -> Result<Credentials, CliError> {
        match (&self.access_key_id.value, &self.secret_access_key.value) {
            (Some(a), Some(s)) => Ok(Credentials {
                access_key_id: a.clone(),
                secret_access_key: s.clone(),
            }),
            _ => Err(CliError::MissingCredentials {
                profile: self.profile.clone(),
                config_path: self.config_path.clone(),
            }),
        }
    }
}

/// Default location of the profile file, from `$XDG_CONFIG_HOME` or `$HOME`.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(xdg) = env("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("nubis/config.toml");
    }
    let home = env("HOME")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".config/nubis/config.toml")
}

/// Path of the profile file: `--config`, else `NUBIS_CONFIG`, else the default.
pub fn config_path(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    flags
        .config
        .clone()
        .or_else(|| {
            env("NUBIS_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| default_config_path(env))
}

fn pick(
    flag: &Option<String>,
    env_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    profile: Option<&Option<String>>,
    default: Option<&str>,
) -> Resolved {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if let Some(v) = non_empty(flag) {
        return Resolved {
            value: Some(v),
            source: Source::Flag,
        };
    }
    if let Some(v) = env(env_name).filter(|s| !s.is_empty()) {
        return Resolved {
            value: Some(v),
            source: Source::Env,
        };
    }
    if let Some(v) = profile.and_then(non_empty) {
        return Resolved {
            value: Some(v),
            source: Source::Profile,
        };
    }
    match default {
        Some(d) => Resolved {
            value: Some(d.to_string()),
            source: Source::Default,
        },
        None => Resolved {
            value: None,
            source: Source::Unset,
        },
    }
}

/// Applies the precedence rules (see the module docs) to flags, an
/// environment and an already-loaded profile file.
pub fn resolve_with(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    file: &ConfigFile,
    config_path: PathBuf,
) -> Result<Settings, CliError> {
    let explicit_profile = flags
        .profile
        .clone()
        .filter(|p| !p.is_empty())
        .or_else(|| env("NUBIS_PROFILE").filter(|p| !p.is_empty()));
    let profile_name = explicit_profile
        .clone()
        .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    let profile = file.profiles.get(&profile_name);
    // A profile the user named explicitly must exist; the implicit default may not.
    if profile.is_none() && explicit_profile.is_some() {
        return Err(CliError::UnknownProfile {
            profile: profile_name,
            config_path,
            known: file.profiles.keys().cloned().collect(),
        });
    }
    let endpoint = pick(
        &flags.endpoint,
        "NUBIS_ENDPOINT",
        env,
        profile.map(|p| &p.endpoint),
        Some(DEFAULT_ENDPOINT),
    );
    if let Some(e) = &endpoint.value {
        validate_endpoint(e)?;
    }
    let ca_file = pick(
        &flags.ca_file,
        "NUBIS_CA_FILE",
        env,
        profile.map(|p| &p.ca_file),
        None,
    );
    Ok(Settings {
        profile_found: profile.is_some(),
        profile: profile_name,
        endpoint,
        region: pick(
            &flags.region,
            "NUBIS_REGION",
            env,
            profile.map(|p| &p.region),
            Some(DEFAULT_REGION),
        ),
        access_key_id: pick(
            &flags.access_key_id,
            "NUBIS_ACCESS_KEY_ID",
            env,
            profile.map(|p| &p.access_key_id),
            None,
        ),
        secret_access_key: pick(
            &flags.secret_access_key,
            "NUBIS_SECRET_ACCESS_KEY",
            env,
            profile.map(|p| &p.secret_access_key),
            None,
        ),
        ca_file,
        config_path,
    })
}

/// Loads the profile file named by flags/environment and resolves settings.
pub fn resolve(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, CliError> {
    let path = config_path(flags, env);
    let file = ConfigFile::load(&path)?;
    resolve_with(flags, env, &file, path)
}

/// The endpoints of a comma-separated list (blanks around commas ignored).
pub fn split_endpoints(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

/// Checks that an endpoint, or each of a comma-separated list, is an
/// `http://` or `https://` URL with a host, or `unix:/absolute/path` of the
/// control plane's Unix socket.
pub fn validate_endpoint(endpoint: &str) -> Result<(), CliError> {
    let list = split_endpoints(endpoint);
    if list.is_empty() {
        return Err(CliError::BadEndpoint {
            endpoint: endpoint.to_string(),
        });
    }
    list.into_iter().try_for_each(validate_one_endpoint)
}

fn validate_one_endpoint(endpoint: &str) -> Result<(), CliError> {
    if let Some(path) = endpoint.strip_prefix("unix:") {
        return if path.starts_with('/') {
            Ok(())
        } else {
            Err(CliError::BadEndpoint {
                endpoint: endpoint.to_string(),
            })
        };
    }
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.starts_with(':') => Ok(()),
        _ => Err(CliError::BadEndpoint {
            endpoint: endpoint.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file() -> ConfigFile {
        ConfigFile::parse(
            r#"
            [profiles.default]
            endpoint = "http://10.0.0.1:7070"
            region = "r-default"
            access_key_id = "AK_DEFAULT"
            secret_access_key = "SK_DEFAULT"

            [profiles.ops]
            endpoint = "http://ops:7070"
            access_key_id = "AK_OPS"
            secret_access_key = "SK_OPS"
            "#,
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn profile_values_used_when_nothing_overrides() {
        let s = resolve_with(&Flags::default(), &env_of(&[]), &file(), "c".into()).unwrap();
        assert_eq!(s.profile, "default");
        assert_eq!(s.endpoint(), "http://10.0.0.1:7070");
        assert_eq!(s.endpoint.source, Source::Profile);
        assert_eq!(s.region.value.as_deref(), Some("r-default"));
        let c = s.credentials().unwrap();
        assert_eq!(c.access_key_id, "AK_DEFAULT");
        assert_eq!(c.secret_access_key, "SK_DEFAULT");
    }

    #[test]
    fn env_beats_profile_and_flag_beats_env() {
        let env = env_of(&[
            ("NUBIS_ENDPOINT", "http://env:1"),
            ("NUBIS_ACCESS_KEY_ID", "AK_ENV"),
        ]);
        let s = resolve_with(&Flags::default(), &env, &file(), "c".into()).unwrap();
        assert_eq!(s.endpoint(), "http://env:1");
        assert_eq!(s.endpoint.source, Source::Env);
        assert_eq!(s.access_key_id.value.as_deref(), Some("AK_ENV"));
        // Secret not overridden: still from the profile.
        assert_eq!(s.secret_access_key.source, Source::Profile);

        let flags = Flags {
            endpoint: Some("http://flag:2".into()),
            ..Flags::default()
        };
        let s = resolve_with(&flags, &env, &file(), "c".into()).unwrap();
        assert_eq!(s.endpoint(), "http://flag:2");
        assert_eq!(s.endpoint.source, Source::Flag);
    }

    #[test]
    fn profile_selected_by_flag_over_env() {
        let env = env_of(&[("NUBIS_PROFILE", "default")]);
        let flags = Flags {
            profile: Some("ops".into()),
            ..Flags::default()
        };
        let s = resolve_with(&flags, &env, &file(), "c".into()).unwrap();
        assert_eq!(s.profile, "ops");
        assert_eq!(s.access_key_id.value.as_deref(), Some("AK_OPS"));
        // ops has no region: the built-in default applies.
        assert_eq!(s.region.value.as_deref(), Some(DEFAULT_REGION));
        assert_eq!(s.region.source, Source::Default);

        let env = env_of(&[("NUBIS_PROFILE", "ops")]);
        let s = resolve_with(&Flags::default(), &env, &file(), "c".into()).unwrap();
        assert_eq!(s.profile, "ops");
    }

    #[test]
    fn named_profile_must_exist_but_default_may_not() {
        let flags = Flags {
            profile: Some("nope".into()),
            ..Flags::default()
        };
        let err = resolve_with(&flags, &env_of(&[]), &file(), "c".into()).unwrap_err();
        assert!(matches!(err, CliError::UnknownProfile { ref known, .. } if known.len() == 2));

        let s = resolve_with(
            &Flags::default(),
            &env_of(&[]),
            &ConfigFile::default(),
            "c".into(),
        )
        .unwrap();
        assert!(!s.profile_found);
        assert_eq!(s.endpoint(), DEFAULT_ENDPOINT);
        assert!(matches!(
            s.credentials(),
            Err(CliError::MissingCredentials { .. })
        ));
    }

    #[test]
    fn empty_values_do_not_override() {
        let env = env_of(&[("NUBIS_ENDPOINT", "")]);
        let flags = Flags {
            region: Some(String::new()),
            ..Flags::default()
        };
        let s = resolve_with(&flags, &env, &file(), "c".into()).unwrap();
        assert_eq!(s.endpoint.source, Source::Profile);
        assert_eq!(s.region.source, Source::Profile);
    }

    #[test]
    fn ca_file_resolves_and_is_read_only_for_https() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "PEM").unwrap();
        let ca = ca.display().to_string();
        let flags = Flags {
            endpoint: Some("https://cp.example:50051".into()),
            ..Flags::default()
        };
        // From the environment; the file is read for an https endpoint.
        let s = resolve_with(
            &flags,
            &env_of(&[("NUBIS_CA_FILE", &ca)]),
            &file(),
            "c".into(),
        )
        .unwrap();
        assert_eq!(s.ca_file.source, Source::Env);
        let tls = s.client_tls().unwrap().unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(&b"PEM"[..]));
        // Not for plaintext endpoints.
        let plain = Flags {
            endpoint: Some("http://127.0.0.1:1".into()),
            ca_file: Some(ca.clone()),
            ..Flags::default()
        };
        let s = resolve_with(&plain, &env_of(&[]), &file(), "c".into()).unwrap();
        assert!(s.client_tls().unwrap().is_none());
        // None set: the system's roots (no explicit settings).
        let s = resolve_with(&flags, &env_of(&[]), &file(), "c".into()).unwrap();
        assert_eq!(s.ca_file.source, Source::Unset);
        assert!(s.client_tls().unwrap().is_none());
        // An unreadable file is an error naming it.
        let missing = Flags {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..flags
        };
        let s = resolve_with(&missing, &env_of(&[]), &file(), "c".into()).unwrap();
        let e = s.client_tls().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn config_path_precedence() {
        let env = env_of(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/x")]);
        assert_eq!(
            config_path(&Flags::default(), &env),
            PathBuf::from("/x/nubis/config.toml")
        );
        let env = env_of(&[("HOME", "/h")]);
        assert_eq!(
            config_path(&Flags::default(), &env),
            PathBuf::from("/h/.config/nubis/config.toml")
        );
        let env = env_of(&[("HOME", "/h"), ("NUBIS_CONFIG", "/e.toml")]);
        assert_eq!(
            config_path(&Flags::default(), &env),
            PathBuf::from("/e.toml")
        );
        let flags = Flags {
            config: Some("/f.toml".into()),
            ..Flags::default()
        };
        assert_eq!(config_path(&flags, &env), PathBuf::from("/f.toml"));
    }

    #[test]
    fn bad_files_and_endpoints_are_rejected() {
        assert!(matches!(
            ConfigFile::parse("[profiles.x]\nendpoit = \"a\"\n", Path::new("t")),
            Err(CliError::ConfigParse { .. })
        ));
        assert!(matches!(
            ConfigFile::parse("not toml [", Path::new("t")),
            Err(CliError::ConfigParse { .. })
        ));
        for bad in [
            "127.0.0.1:7070",
            "ftp://x",
            "http://",
            "http:///x",
            "unix:rel.sock",
            ",",
            "http://127.0.0.1:1,ftp://x",
        ] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
        for good in [
            "http://127.0.0.1:50051",
            "https://cp.example:443",
            "unix:/run/cp.sock",
            "http://127.0.0.1:1, http://127.0.0.1:2,unix:/run/cp.sock",
        ] {
            validate_endpoint(good).unwrap();
        }
        let flags = Flags {
            endpoint: Some("localhost:1".into()),
            ..Flags::default()
        };
        assert!(matches!(
            resolve_with(&flags, &env_of(&[]), &file(), "c".into()),
            Err(CliError::BadEndpoint { .. })
        ));
    }

    #[test]
    fn several_endpoints_are_split_in_order() {
        let env = env_of(&[("NUBIS_ENDPOINT", "http://cp1:1, http://cp2:2,,http://cp3:3")]);
        let s = resolve_with(&Flags::default(), &env, &file(), "c".into()).unwrap();
        assert_eq!(
            s.endpoints(),
            ["http://cp1:1", "http://cp2:2", "http://cp3:3"]
        );
        let one = resolve_with(
            &Flags::default(),
            &env_of(&[]),
            &ConfigFile::default(),
            "c".into(),
        )
        .unwrap();
        assert_eq!(one.endpoints(), [DEFAULT_ENDPOINT]);
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let f = file();
        f.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), f);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            ConfigFile::load(&dir.path().join("missing.toml")).unwrap(),
            ConfigFile::default()
        );
    }
}
