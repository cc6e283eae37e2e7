//! Repositories of the Auto Scaling aggregates: launch templates (header and
//! immutable versions), Auto Scaling groups and their scaling activities.
//! Keys: `launch-templates/`, `launch-template-versions/`, `asgs/`,
//! `asg-activities/` (see docs/etcd-schema.md).

use super::repo::Pages;
use super::{Store, Tx, Versioned};
use crate::domain::autoscaling::templates::{LaunchTemplate, LaunchTemplateVersion};
use crate::domain::autoscaling::{Activity, AutoScalingGroup};
use crate::error::Result;
use crate::ids::{AccountId, LaunchTemplateId};

impl Store {
    /// Launch templates and their versions.
    pub fn launch_templates(&self) -> LaunchTemplates<'_> {
        LaunchTemplates(self)
    }
    /// Auto Scaling groups and their activities.
    pub fn asgs(&self) -> Asgs<'_> {
        Asgs(self)
    }
}

/// Launch templates.
#[derive(Debug, Clone, Copy)]
pub struct LaunchTemplates<'a>(&'a Store);

impl<'a> LaunchTemplates<'a> {
    /// Reads a template by name.
    pub async fn get(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<Versioned<LaunchTemplate>>> {
        self.0
            .repo()
            .get(&self.0.keys().launch_template(account, name))
            .await
    }
    /// An account's templates, page by page.
    pub fn of(&self, account: &AccountId) -> Pages<'a, LaunchTemplate> {
        self.0
            .repo()
            .pages(self.0.keys().account_launch_templates(account))
    }
    /// Stages the creation of a template (name absent).
    pub fn stage_create(&self, tx: &mut Tx, t: &LaunchTemplate) -> Result<()> {
        tx.create(&self.0.keys().launch_template(&t.account, &t.name), t)?;
        Ok(())
    }
    /// Stages a compare-and-swap of a template header.
    pub fn stage_replace(
        &self,
        tx: &mut Tx,
        cur: &Versioned<LaunchTemplate>,
        t: &LaunchTemplate,
    ) -> Result<()> {
        tx.replace(&self.0.keys().launch_template(&t.account, &t.name), cur, t)?;
        Ok(())
    }
    /// Stages the creation of a version (number absent).
    pub fn stage_create_version(&self, tx: &mut Tx, v: &LaunchTemplateVersion) -> Result<()> {
        tx.create(
            &self
                .0
                .keys()
                .launch_template_version(&v.template_id, v.number),
            v,
        )?;
        Ok(())
    }
    /// Reads one version.
    pub async fn version(
        &self,
        id: &LaunchTemplateId,
        n: u64,
    ) -> Result<Option<Versioned<LaunchTemplateVersion>>> {
        self.0
            .repo()
            .get(&self.0.keys().launch_template_version(id, n))
            .await
    }
    /// A template's versions, page by page (ascending).
    pub fn versions(&self, id: &LaunchTemplateId) -> Pages<'a, LaunchTemplateVersion> {
        self.0
            .repo()
            .pages(self.0.keys().launch_template_versions(id))
    }
    /// Deletes one version.
    pub async fn delete_version(&self, id: &LaunchTemplateId, n: u64) -> Result<()> {
        let mut tx = Tx::new();
        tx.delete(&self.0.keys().launch_template_version(id, n));
        self.0.commit(tx).await?;
        Ok(())
    }
    /// Stages the deletion of a template header (compared).
    pub fn stage_delete(&self, tx: &mut Tx, cur: &Versioned<LaunchTemplate>) {
        let t = &cur.value;
        tx.delete_if_unchanged(&self.0.keys().launch_template(&t.account, &t.name), cur);
    }
    /// Deletes a deleted template's versions (one range deletion).
    pub async fn delete_versions(&self, t: &LaunchTemplate) -> Result<()> {
        let mut tx = Tx::new();
        tx.delete_prefix(&self.0.keys().launch_template_versions(&t.id));
        self.0.commit(tx).await?;
        Ok(())
    }
}

/// Auto Scaling groups.
#[derive(Debug, Clone, Copy)]
pub struct Asgs<'a>(&'a Store);

impl<'a> Asgs<'a> {
    /// The key of a group.
    pub fn key(&self, account: &AccountId, name: &str) -> String {
        self.0.keys().asg(account, name)
    }
    /// Reads a group.
    pub async fn get(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<Versioned<AutoScalingGroup>>> {
        self.0.repo().get(&self.key(account, name)).await
    }
    /// An account's groups, page by page.
    pub fn of(&self, account: &AccountId) -> Pages<'a, AutoScalingGroup> {
        self.0.repo().pages(self.0.keys().account_asgs(account))
    }
    /// Every group, page by page.
    pub fn all(&self) -> Pages<'a, AutoScalingGroup> {
        self.0.repo().pages(self.0.keys().all_asgs())
    }
    /// The prefix the controller's early runs watch.
    pub fn prefix(&self) -> String {
        self.0.keys().all_asgs()
    }
    /// Stages the creation of a group (name absent).
    pub fn stage_create(&self, tx: &mut Tx, g: &AutoScalingGroup) -> Result<()> {
        tx.create(&self.key(&g.account, &g.name), g)?;
        Ok(())
    }
    /// Stages a compare-and-swap of a group.
    pub fn stage_replace(
        &self,
        tx: &mut Tx,
        cur: &Versioned<AutoScalingGroup>,
        g: &AutoScalingGroup,
    ) -> Result<()> {
        tx.replace(&self.key(&g.account, &g.name), cur, g)?;
        Ok(())
    }
    /// Stages the deletion of a group (compared) and of its activities.
    pub fn stage_delete(&self, tx: &mut Tx, cur: &Versioned<AutoScalingGroup>) {
        let g = &cur.value;
        tx.delete_if_unchanged(&self.key(&g.account, &g.name), cur);
        tx.delete_prefix(&self.0.keys().asg_activities(&g.account, &g.name));
    }
    /// Stages a write of an activity (new or updated).
    pub fn stage_put_activity(&self, tx: &mut Tx, a: &Activity) -> Result<()> {
        tx.put(&self.0.keys().asg_activity(&a.account, &a.group, a.seq), a)?;
        Ok(())
    }
    /// Reads one activity.
    pub async fn activity(
        &self,
        account: &AccountId,
        group: &str,
        seq: u64,
    ) -> Result<Option<Versioned<Activity>>> {
        self.0
            .repo()
            .get(&self.0.keys().asg_activity(account, group, seq))
            .await
    }
    /// A group's activities, page by page (oldest first).
    pub fn activities(&self, account: &AccountId, group: &str) -> Pages<'a, Activity> {
        self.0
            .repo()
            .pages(self.0.keys().asg_activities(account, group))
    }
}
