//! `nubis configure` (write a profile) and `nubis configure list` (show the
//! effective settings and their sources).

use std::io::{BufRead, IsTerminal, Write};

use serde::Serialize;

use crate::cli::{ConfigureAction, ConfigureArgs};
use crate::config::{self, ConfigFile, Flags, Resolved};
use crate::error::CliError;
use crate::output::{emit, render_list, Format, Tabular};

/// One effective setting.
#[derive(Debug, Serialize)]
pub struct SettingView {
    /// Setting name.
    pub name: String,
    /// Value (secrets masked).
    pub value: String,
    /// flag | env | profile | default | unset.
    pub source: config::Source,
}

impl Tabular for SettingView {
    fn headers() -> &'static [&'static str] {
        &["NAME", "VALUE", "SOURCE"]
    }
    fn row(&self) -> Vec<String> {
        let source = serde_json::to_value(self.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        vec![self.name.clone(), self.value.clone(), source]
    }
}

/// Masks all but the last four characters of a secret.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 4 {
        return "****".into();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("****************{tail}")
}

/// Runs `nubis configure [list]`.
pub fn run(
    args: ConfigureArgs,
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    format: Format,
) -> Result<(), CliError> {
    match args.action {
        Some(ConfigureAction::List) => {
            let s = config::resolve(flags, env)?;
            let row = |name: &str, r: &Resolved, secret: bool| SettingView {
                name: name.into(),
                value: match &r.value {
                    Some(v) if secret => mask(v),
                    Some(v) => v.clone(),
                    None => String::new(),
                },
                source: r.source,
            };
            let mut rows = vec![
                SettingView {
                    name: "profile".into(),
                    value: s.profile.clone(),
                    source: if s.profile_found {
                        config::Source::Profile
                    } else {
                        config::Source::Unset
                    },
                },
                SettingView {
                    name: "config_file".into(),
                    value: s.config_path.display().to_string(),
                    source: config::Source::Default,
                },
            ];
            rows.push(row("endpoint", &s.endpoint, false));
            rows.push(row("region", &s.region, false));
            rows.push(row("access_key_id", &s.access_key_id, false));
            rows.push(row("secret_access_key", &s.secret_access_key, true));
            rows.push(row("ca_file", &s.ca_file, false));
            emit(&render_list(format, "settings", &rows)?)
        }
        Some(ConfigureAction::Delete) => delete_profile(flags, env),
        None => write_profile(flags, env),
    }
}

fn delete_profile(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CliError> {
    let Some(name) = flags.profile.clone().filter(|p| !p.is_empty()) else {
        return Err(CliError::Usage(
            "name the profile to delete with --profile NAME".into(),
        ));
    };
    let path = config::config_path(flags, env);
    let mut file = ConfigFile::load(&path)?;
    if file.profiles.remove(&name).is_none() {
        return Err(CliError::NotFound(format!(
            "profile {name:?} not found in {}",
            path.display()
        )));
    }
    file.save(&path)?;
    eprintln!("deleted profile {name:?} from {}", path.display());
    Ok(())
}

fn prompt(label: &str, current: Option<&str>, secret: bool) -> Result<Option<String>, CliError> {
    let shown = match current {
        Some(c) if secret => format!(" [{}]", mask(c)),
        Some(c) => format!(" [{c}]"),
        None => String::new(),
    };
    eprint!("{label}{shown}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| CliError::ReadFile {
            path: "<stdin>".into(),
            source,
        })?;
    let line = line.trim();
    Ok(if line.is_empty() {
        None
    } else {
        Some(line.to_string())
    })
}

fn write_profile(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CliError> {
    let path = config::config_path(flags, env);
    let mut file = ConfigFile::load(&path)?;
    let name = flags
        .profile
        .clone()
        .or_else(|| env("NUBIS_PROFILE"))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| config::DEFAULT_PROFILE.to_string());
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CliError::Usage(format!(
            "profile name {name:?} may only contain letters, digits, '-' and '_'"
        )));
    }
    let mut profile = file.profiles.get(&name).cloned().unwrap_or_default();
    let given = [
        &flags.endpoint,
        &flags.region,
        &flags.access_key_id,
        &flags.secret_access_key,
        &flags.ca_file,
    ]
    .iter()
    .any(|v| v.is_some());
    if given {
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v {
                *slot = Some(v.clone());
            }
        };
        set(&mut profile.endpoint, &flags.endpoint);
        set(&mut profile.region, &flags.region);
        set(&mut profile.access_key_id, &flags.access_key_id);
        set(&mut profile.secret_access_key, &flags.secret_access_key);
        set(&mut profile.ca_file, &flags.ca_file);
    } else if std::io::stdin().is_terminal() {
        let ask = |slot: &mut Option<String>, label: &str, secret: bool| {
            if let Some(v) = prompt(label, slot.as_deref(), secret)? {
                *slot = Some(v);
            }
            Ok::<(), CliError>(())
        };
        ask(&mut profile.endpoint, "Endpoint", false)?;
        ask(&mut profile.region, "Region", false)?;
        ask(&mut profile.access_key_id, "Access key id", false)?;
        ask(&mut profile.secret_access_key, "Secret access key", true)?;
    } else {
        return Err(CliError::Usage(
            "nothing to configure: pass --endpoint, --region, --access-key-id, \
             --secret-access-key and/or --ca-file (or run on a terminal to be asked)"
                .into(),
        ));
    }
    if let Some(e) = &profile.endpoint {
        config::validate_endpoint(e)?;
    }
    file.profiles.insert(name.clone(), profile);
    file.save(&path)?;
    eprintln!("saved profile {name:?} in {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secrets() {
        assert_eq!(mask("abc"), "****");
        assert_eq!(mask("0123456789"), "****************6789");
    }
}
