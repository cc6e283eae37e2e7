//! Launch templates: named, versioned launch parameters of one account.
//!
//! Owns the template header (`launch-templates/<account>/<hex name>`: id,
//! default and latest version numbers) and its immutable versions
//! (`launch-template-versions/<lt-…>/<n>`), the rules of version selection
//! (`$Latest`, `$Default`, a number) and [`resolve_launch`], the merge of a
//! version with explicit RunInstances parameters (explicit wins).

use serde::{Deserialize, Serialize};

use crate::domain::instances::RunInstancesInput;
use crate::domain::model::now_ms;
use crate::domain::quotas::Resource;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, LaunchTemplateId};
use crate::store::{Tx, Versioned};

/// Most versions one template may have.
pub const MAX_VERSIONS: u64 = 1000;

/// A launch template's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplate {
    /// Id.
    pub id: LaunchTemplateId,
    /// Owner.
    pub account: AccountId,
    /// Name (unique within the account).
    pub name: String,
    /// The version `$Default` names.
    pub default_version: u64,
    /// The highest version number.
    pub latest_version: u64,
    /// Creation time (ms).
    pub created_ms: i64,
}

/// The launch parameters a version holds (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplateData {
    /// `ami-…`.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Instance type name.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Key pair name.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Raw user data.
    #[serde(default)]
    pub user_data: Option<Vec<u8>>,
    /// Security group ids (kept and described; Nubis has no security groups yet).
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Instance tags (TagSpecifications of resource type `instance`).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// One immutable version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplateVersion {
    /// Template id.
    pub template_id: LaunchTemplateId,
    /// Template name.
    pub template_name: String,
    /// Version number (1-based).
    pub number: u64,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The parameters.
    pub data: LaunchTemplateData,
    /// Creation time (ms).
    pub created_ms: i64,
}

/// How a caller names a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

/// A version selector: `$Latest`, `$Default` (also when absent) or a number.
pub fn parse_version(v: Option<&str>) -> Result<VersionSel> {
    match v {
        None | Some("") | Some("$Default") => Ok(VersionSel::Default),
        Some("$Latest") => Ok(VersionSel::Latest),
        Some(n) => n
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(VersionSel::Number)
            .ok_or_else(|| {
                Error::invalid_code(
                    "InvalidLaunchTemplateVersion.Malformed",
                    format!("invalid launch template version {n:?}"),
                )
            }),
    }
}

/// A parsed version selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSel {
    /// `$Default`.
    Default,
    /// `$Latest`.
    Latest,
    /// A number.
    Number(u64),
}

impl VersionSel {
    /// The selector as clients write it.
    pub fn to_wire(self) -> String {
        match self {
            VersionSel::Default => "$Default".into(),
            VersionSel::Latest => "$Latest".into(),
            VersionSel::Number(n) => n.to_string(),
        }
    }
    /// The version number it selects in `t`.
    pub fn number_in(self, t: &LaunchTemplate) -> u64 {
        match self {
            VersionSel::Default => t.default_version,
            VersionSel::Latest => t.latest_version,
            VersionSel::Number(n) => n,
        }
    }
}

/// Merges a template version with explicit RunInstances parameters:
/// every parameter given explicitly wins; the rest come from the version.
/// Tags: the version's, then the explicit ones (same key: explicit wins).
pub fn resolve_launch(
    version: Option<&LaunchTemplateData>,
    explicit: RunInstancesInput,
) -> RunInstancesInput {
    let Some(v) = version else {
        return explicit;
    };
    let mut out = explicit;
    if out.image_id.is_empty() {
        out.image_id = v.image_id.clone().unwrap_or_default();
    }
    if out.instance_type.is_empty() {
        out.instance_type = v.instance_type.clone().unwrap_or_default();
    }
    if out.key_name.is_none() {
        out.key_name = v.key_name.clone();
    }
    if out.user_data.is_empty() {
        out.user_data = v.user_data.clone().unwrap_or_default();
    }
    let mut tags: Vec<(String, String)> = v
        .tags
        .iter()
        .filter(|(k, _)| !out.tags.iter().any(|(ek, _)| ek == k))
        .cloned()
        .collect();
    tags.append(&mut out.tags);
    out.tags = tags;
    out
}

fn check_name(name: &str) -> Result<()> {
    let ok = (3..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"()./_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_code(
            "InvalidLaunchTemplateName.MalformedException",
            "a launch template name must be 3 to 128 characters of letters, digits, ( ) . / _ -",
        ))
    }
}

fn check_data(domain: &Domain, d: &LaunchTemplateData) -> Result<()> {
    if let Some(i) = &d.image_id {
        crate::ids::ImageId::parse(i)?;
    }
    if let Some(t) = &d.instance_type {
        if domain.types.get(t).is_none() {
            return Err(Error::invalid(format!(
                "the instance type '{t}' does not exist"
            )));
        }
    }
    if let Some(k) = &d.key_name {
        validation::key_name(k)?;
    }
    if let Some(u) = &d.user_data {
        validation::user_data(u)?;
    }
    validation::tags(&d.tags)?;
    Ok(())
}

fn not_found(what: &TemplateRef) -> Error {
    match what {
        TemplateRef::Id(id) => Error::not_found(
            "InvalidLaunchTemplateId.NotFound",
            format!("The specified launch template, with template ID {id}, does not exist."),
        ),
        TemplateRef::Name(n) => Error::not_found(
            "InvalidLaunchTemplateName.NotFoundException",
            format!("The specified launch template, with template name {n}, does not exist."),
        ),
    }
}

impl Domain {
    /// CreateLaunchTemplate: the template with version 1 (its default).
    pub async fn create_launch_template(
        &self,
        caller: &Caller,
        name: &str,
        description: &str,
        data: LaunchTemplateData,
    ) -> Result<(LaunchTemplate, LaunchTemplateVersion)> {
        let account = caller.account()?;
        check_name(name)?;
        check_data(self, &data)?;
        let now = now_ms();
        let t = LaunchTemplate {
            id: LaunchTemplateId::generate(),
            account: account.clone(),
            name: name.to_string(),
            default_version: 1,
            latest_version: 1,
            created_ms: now,
        };
        let v = LaunchTemplateVersion {
            template_id: t.id.clone(),
            template_name: t.name.clone(),
            number: 1,
            description: description.to_string(),
            data,
            created_ms: now,
        };
        let repo = self.store.launch_templates();
        let duplicate = || Error::AlreadyExists {
            code: "InvalidLaunchTemplateName.AlreadyExistsException".into(),
            message: format!("Launch template name already in use: {name}"),
        };
        // A taken name is a duplicate whatever the quota.
        if repo.get(&account, name).await?.is_some() {
            return Err(duplicate());
        }
        // With its quota charge, compared on the usage record: a lost
        // compare is either the name taken or a racing charge (re-read).
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let mut tx = Tx::new();
            repo.stage_create(&mut tx, &t)?;
            repo.stage_create_version(&mut tx, &v)?;
            self.stage_quota(&mut tx, &account, Resource::LaunchTemplates, 1)
                .await?;
            if self.store.commit(tx).await?.is_some() {
                return Ok((t, v));
            }
            if repo.get(&account, name).await?.is_some() {
                return Err(duplicate());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("launch template quota".into()))
    }

    /// The template `what` names, visible to the caller's account.
    pub async fn launch_template(
        &self,
        caller: &Caller,
        what: &TemplateRef,
    ) -> Result<Versioned<LaunchTemplate>> {
        let account = caller.account()?;
        self.launch_template_of(&account, what).await
    }

    pub(crate) async fn launch_template_of(
        &self,
        account: &AccountId,
        what: &TemplateRef,
    ) -> Result<Versioned<LaunchTemplate>> {
        let repo = self.store.launch_templates();
        match what {
            TemplateRef::Name(n) => repo.get(account, n).await?.ok_or_else(|| not_found(what)),
            TemplateRef::Id(id) => {
                let id = LaunchTemplateId::parse(id)?;
                repo.of(account)
                    .collect()
                    .await?
                    .into_iter()
                    .map(|(_, v)| v)
                    .find(|v| v.value.id == id)
                    .ok_or_else(|| not_found(what))
            }
        }
    }

    /// The version `sel` selects of the template `what`.
    pub async fn launch_template_version(
        &self,
        account: &AccountId,
        what: &TemplateRef,
        sel: VersionSel,
    ) -> Result<LaunchTemplateVersion> {
        let t = self.launch_template_of(account, what).await?.value;
        let n = sel.number_in(&t);
        self.store
            .launch_templates()
            .version(&t.id, n)
            .await?
            .map(|v| v.value)
            .ok_or_else(|| {
                Error::not_found(
                    "InvalidLaunchTemplateVersion.NotFound",
                    format!("launch template {} has no version {n}", t.id),
                )
            })
    }

    /// RunInstances with `LaunchTemplate`: the version `version` selects
    /// (`$Default` when absent) of the caller's template, overridden by
    /// every parameter given explicitly ([`resolve_launch`]); the instances
    /// carry `aws:ec2launchtemplate:id` and `aws:ec2launchtemplate:version`
    /// as EC2 writes them.
    pub async fn run_instances_with_template(
        &self,
        caller: &Caller,
        what: &TemplateRef,
        version: Option<&str>,
        explicit: crate::domain::instances::RunInstancesInput,
    ) -> Result<crate::domain::views::Reservation> {
        let account = caller.account()?;
        let sel = parse_version(version)?;
        let v = self.launch_template_version(&account, what, sel).await?;
        let input = resolve_launch(Some(&v.data), explicit);
        let system = [
            (
                super::controller::TEMPLATE_ID_TAG.to_string(),
                v.template_id.to_string(),
            ),
            (
                super::controller::TEMPLATE_VERSION_TAG.to_string(),
                v.number.to_string(),
            ),
        ];
        self.run_instances_with_system_tags(caller, input, &system)
            .await
    }

    /// CreateLaunchTemplateVersion: a new latest version (from `source`'s
    /// data when given, overlaid with `data`'s set fields).
    pub async fn create_launch_template_version(
        &self,
        caller: &Caller,
        what: &TemplateRef,
        source: Option<VersionSel>,
        description: &str,
        data: LaunchTemplateData,
    ) -> Result<LaunchTemplateVersion> {
        let account = caller.account()?;
        check_data(self, &data)?;
        let repo = self.store.launch_templates();
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let cur = self.launch_template_of(&account, what).await?;
            let mut t = cur.value.clone();
            if t.latest_version >= MAX_VERSIONS {
                return Err(Error::invalid_code(
                    "VersionLimitExceeded",
                    format!("launch template {} has {MAX_VERSIONS} versions", t.id),
                ));
            }
            let mut merged = data.clone();
            if let Some(sel) = source {
                let base = self
                    .launch_template_version(&account, what, sel)
                    .await?
                    .data;
                merged = overlay(base, data.clone());
            }
            t.latest_version += 1;
            let v = LaunchTemplateVersion {
                template_id: t.id.clone(),
                template_name: t.name.clone(),
                number: t.latest_version,
                description: description.to_string(),
                data: merged,
                created_ms: now_ms(),
            };
            let mut tx = Tx::new();
            repo.stage_replace(&mut tx, &cur, &t)?;
            repo.stage_create_version(&mut tx, &v)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(v);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("launch template".into()))
    }

    /// ModifyLaunchTemplate: sets the default version.
    pub async fn set_default_launch_template_version(
        &self,
        caller: &Caller,
        what: &TemplateRef,
        version: u64,
    ) -> Result<LaunchTemplate> {
        let account = caller.account()?;
        let cur = self.launch_template_of(&account, what).await?;
        let repo = self.store.launch_templates();
        if repo.version(&cur.value.id, version).await?.is_none() {
            return Err(Error::not_found(
                "InvalidLaunchTemplateVersion.NotFound",
                format!("launch template {} has no version {version}", cur.value.id),
            ));
        }
        let mut t = cur.value.clone();
        t.default_version = version;
        let mut tx = Tx::new();
        repo.stage_replace(&mut tx, &cur, &t)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("launch template".into()));
        }
        Ok(t)
    }

    /// DescribeLaunchTemplates: the account's templates (all when `refs` is empty).
    pub async fn describe_launch_templates(
        &self,
        caller: &Caller,
        refs: &[TemplateRef],
    ) -> Result<Vec<LaunchTemplate>> {
        let account = caller.account()?;
        if refs.is_empty() {
            let all = self.store.launch_templates().of(&account).collect().await?;
            return Ok(all.into_iter().map(|(_, v)| v.value).collect());
        }
        let mut out = Vec::new();
        for r in refs {
            out.push(self.launch_template_of(&account, r).await?.value);
        }
        Ok(out)
    }

    /// DescribeLaunchTemplateVersions: the selected versions (all when empty).
    pub async fn describe_launch_template_versions(
        &self,
        caller: &Caller,
        what: &TemplateRef,
        sels: &[VersionSel],
    ) -> Result<Vec<LaunchTemplateVersion>> {
        let account = caller.account()?;
        let t = self.launch_template_of(&account, what).await?.value;
        let repo = self.store.launch_templates();
        if sels.is_empty() {
            let all = repo.versions(&t.id).collect().await?;
            return Ok(all.into_iter().map(|(_, v)| v.value).collect());
        }
        let mut out = Vec::new();
        for s in sels {
            out.push(self.launch_template_version(&account, what, *s).await?);
        }
        Ok(out)
    }

    /// DeleteLaunchTemplateVersions: deletes versions other than the default.
    pub async fn delete_launch_template_versions(
        &self,
        caller: &Caller,
        what: &TemplateRef,
        numbers: &[u64],
    ) -> Result<Vec<u64>> {
        let account = caller.account()?;
        let t = self.launch_template_of(&account, what).await?.value;
        let repo = self.store.launch_templates();
        let mut deleted = Vec::new();
        for n in numbers {
            if *n == t.default_version {
                return Err(Error::invalid_code(
                    "InvalidLaunchTemplateVersion.DefaultVersion",
                    format!("version {n} is the default version of {}", t.id),
                ));
            }
            if repo.version(&t.id, *n).await?.is_none() {
                return Err(Error::not_found(
                    "InvalidLaunchTemplateVersion.NotFound",
                    format!("launch template {} has no version {n}", t.id),
                ));
            }
        }
        for n in numbers {
            repo.delete_version(&t.id, *n).await?;
            deleted.push(*n);
        }
        Ok(deleted)
    }

    /// DeleteLaunchTemplate: the header and every version.
    pub async fn delete_launch_template(
        &self,
        caller: &Caller,
        what: &TemplateRef,
    ) -> Result<LaunchTemplate> {
        let account = caller.account()?;
        let mut cur = self.launch_template_of(&account, what).await?;
        // The header with its quota release (both compared, so a repeated
        // delete releases once), then the versions.
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let mut tx = Tx::new();
            self.store.launch_templates().stage_delete(&mut tx, &cur);
            self.stage_quota(&mut tx, &account, Resource::LaunchTemplates, -1)
                .await?;
            if self.store.commit(tx).await?.is_some() {
                self.store
                    .launch_templates()
                    .delete_versions(&cur.value)
                    .await?;
                return Ok(cur.value);
            }
            cur = self.launch_template_of(&account, what).await?;
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("launch template".into()))
    }
}

/// `over`'s set fields on top of `base`.
fn overlay(base: LaunchTemplateData, over: LaunchTemplateData) -> LaunchTemplateData {
    LaunchTemplateData {
        image_id: over.image_id.or(base.image_id),
        instance_type: over.instance_type.or(base.instance_type),
        key_name: over.key_name.or(base.key_name),
        user_data: over.user_data.or(base.user_data),
        security_group_ids: if over.security_group_ids.is_empty() {
            base.security_group_ids
        } else {
            over.security_group_ids
        },
        tags: if over.tags.is_empty() {
            base.tags
        } else {
            over.tags
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit() -> RunInstancesInput {
        RunInstancesInput {
            min_count: 1,
            max_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn explicit_parameters_override_the_template() {
        let v = LaunchTemplateData {
            image_id: Some("ami-00000000000000001".into()),
            instance_type: Some("t3.nano".into()),
            key_name: Some("k".into()),
            user_data: Some(b"tpl".to_vec()),
            security_group_ids: vec![],
            tags: vec![("a".into(), "tpl".into()), ("b".into(), "tpl".into())],
        };
        let r = resolve_launch(Some(&v), explicit());
        assert_eq!(r.image_id, "ami-00000000000000001");
        assert_eq!(r.instance_type, "t3.nano");
        assert_eq!(r.key_name.as_deref(), Some("k"));
        assert_eq!(r.user_data, b"tpl");
        let mut e = explicit();
        e.instance_type = "t3.micro".into();
        e.user_data = b"mine".to_vec();
        e.tags = vec![("b".into(), "mine".into())];
        let r = resolve_launch(Some(&v), e);
        assert_eq!(r.instance_type, "t3.micro");
        assert_eq!(r.image_id, "ami-00000000000000001");
        assert_eq!(r.user_data, b"mine");
        assert_eq!(
            r.tags,
            vec![("a".into(), "tpl".into()), ("b".into(), "mine".into())]
        );
    }

    #[test]
    fn version_selectors() {
        let t = LaunchTemplate {
            id: LaunchTemplateId::generate(),
            account: AccountId::operator(),
            name: "web".into(),
            default_version: 2,
            latest_version: 5,
            created_ms: 0,
        };
        assert_eq!(parse_version(None).unwrap().number_in(&t), 2);
        assert_eq!(parse_version(Some("$Latest")).unwrap().number_in(&t), 5);
        assert_eq!(parse_version(Some("3")).unwrap().number_in(&t), 3);
        assert!(parse_version(Some("0")).is_err());
        assert!(parse_version(Some("x")).is_err());
        assert!(check_name("ab").is_err());
        assert!(check_name("web-tier_1").is_ok());
    }
}
