//! Tags on instances (`i-`), images (`ami-`, owner only), key pairs
//! (`key-`), Elastic IPs (`eipalloc-`), internet gateways (`igw-`) and route
//! tables (`rtb-`) and elastic network interfaces (`eni-`, stored ones; an
//! instance's derived primary interface has no record to hold tags):
//! CreateTags, DeleteTags, DescribeTags. Tags live inside
//! each resource's record and are changed by compare-and-swap; a resource of
//! another account is not found (its kind's `…NotFound` code).

use std::collections::BTreeMap;

use crate::domain::filters::{self, Filter};
use crate::domain::model::{Image, Instance, KeyPair};
use crate::domain::vpc::addresses::ElasticIp;
use crate::domain::vpc::enis::NetworkInterface;
use crate::domain::vpc::gateways::InternetGateway;
use crate::domain::vpc::routes::RouteTable;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{
    AccountId, AllocationId, ImageId, InstanceId, InternetGatewayId, KeyPairId, NetworkInterfaceId,
    RouteTableId,
};
use crate::store::Record;

/// Filter names DescribeTags supports.
/// `tag:KEY` selects every tag of the resources that have tag KEY with one
/// of the values (as EC2).
pub const TAG_FILTERS: &[&str] = &["resource-id", "resource-type", "key", "value", "tag:"];

/// One tag of one resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagDescription {
    /// Resource id.
    pub resource_id: String,
    /// instance | image | key-pair | elastic-ip | internet-gateway |
    /// route-table | network-interface.
    pub resource_type: &'static str,
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

trait Tagged: Record + Clone {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String>;
}
impl Tagged for Instance {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}
impl Tagged for Image {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}
impl Tagged for KeyPair {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}
impl Tagged for ElasticIp {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}
impl Tagged for InternetGateway {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}
impl Tagged for NetworkInterface {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}
impl Tagged for RouteTable {
    fn tags_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.tags
    }
}

/// The kinds of resource tags are kept on, by id prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    Image,
    KeyPair,
    ElasticIp,
    InternetGateway,
    RouteTable,
    NetworkInterface,
}

impl Kind {
    fn of(id: &str) -> Option<Self> {
        let (prefix, _) = id.split_once('-')?;
        Some(match prefix {
            "i" => Self::Instance,
            "ami" => Self::Image,
            "key" => Self::KeyPair,
            "eipalloc" => Self::ElasticIp,
            "igw" => Self::InternetGateway,
            "rtb" => Self::RouteTable,
            "eni" => Self::NetworkInterface,
            _ => return None,
        })
    }

    /// The EC2 code of a missing (or another account's) resource.
    fn not_found_code(self) -> &'static str {
        match self {
            Self::Instance => "InvalidInstanceID.NotFound",
            Self::Image | Self::KeyPair => "InvalidID.NotFound",
            Self::ElasticIp => "InvalidAllocationID.NotFound",
            Self::InternetGateway => "InvalidInternetGatewayID.NotFound",
            Self::RouteTable => "InvalidRouteTableID.NotFound",
            Self::NetworkInterface => "InvalidNetworkInterfaceID.NotFound",
        }
    }
}

impl Domain {
    async fn resource_key(&self, account: &AccountId, id: &str) -> Result<String> {
        let keys = self.store.keys();
        let Some(kind) = Kind::of(id) else {
            return Err(Error::invalid_code(
                "InvalidID",
                format!("the ID '{id}' is not valid"),
            ));
        };
        Ok(match kind {
            Kind::Instance => self.store.instances().key(account, &InstanceId::parse(id)?),
            Kind::Image => {
                let i = ImageId::parse(id)?;
                let img = self.visible_image(account, &i).await?;
                if &img.owner != account && *account != AccountId::operator() {
                    return Err(Error::Unauthorized(format!(
                        "image {id} belongs to another account"
                    )));
                }
                self.store.images().key(&i)
            }
            Kind::KeyPair => {
                let k = KeyPairId::parse(id)?;
                let all = self.store.keypairs().of(account).collect().await?;
                all.into_iter()
                    .find(|(_, v)| v.value.id == k)
                    .map(|(key, _)| key)
                    .ok_or_else(|| {
                        Error::not_found(
                            "InvalidKeyPair.NotFound",
                            format!("the key pair '{id}' does not exist"),
                        )
                    })?
            }
            Kind::ElasticIp => keys.elastic_ip(account, &AllocationId::parse(id)?),
            Kind::InternetGateway => keys.internet_gateway(account, &InternetGatewayId::parse(id)?),
            Kind::RouteTable => keys.route_table(account, &RouteTableId::parse(id)?),
            Kind::NetworkInterface => {
                keys.network_interface(account, &NetworkInterfaceId::parse(id)?)
            }
        })
    }

    async fn modify_tags<T: Tagged>(
        &self,
        key: &str,
        id: &str,
        f: &(dyn Fn(&mut BTreeMap<String, String>) -> Result<()> + Sync),
    ) -> Result<()> {
        let updated = self
            .store
            .repo::<T>()
            .update(key, |cur| {
                let mut v = cur.clone();
                f(v.tags_mut())?;
                Ok(Some(v))
            })
            .await?;
        match updated {
            Some(_) => Ok(()),
            None => Err(Error::not_found(
                "InvalidID.NotFound",
                format!("the resource '{id}' does not exist"),
            )),
        }
    }

    async fn for_each_resource(
        &self,
        caller: &Caller,
        ids: &[String],
        f: &(dyn Fn(&mut BTreeMap<String, String>) -> Result<()> + Sync),
    ) -> Result<()> {
        let account = caller.account()?;
        if ids.is_empty() {
            return Err(Error::missing("ResourceId"));
        }
        let mut keys = Vec::new();
        for id in ids {
            let key = self.resource_key(&account, id).await?;
            // Existence check before any change.
            let kind = Kind::of(id).unwrap_or(Kind::KeyPair);
            if self.store.get_raw(&key).await?.is_none() {
                return Err(Error::not_found(
                    kind.not_found_code(),
                    format!("the resource '{id}' does not exist"),
                ));
            }
            keys.push((id, key, kind));
        }
        for (id, key, kind) in keys {
            match kind {
                Kind::Instance => self.modify_tags::<Instance>(&key, id, f).await?,
                Kind::Image => self.modify_tags::<Image>(&key, id, f).await?,
                Kind::KeyPair => self.modify_tags::<KeyPair>(&key, id, f).await?,
                Kind::ElasticIp => self.modify_tags::<ElasticIp>(&key, id, f).await?,
                Kind::InternetGateway => self.modify_tags::<InternetGateway>(&key, id, f).await?,
                Kind::RouteTable => self.modify_tags::<RouteTable>(&key, id, f).await?,
                Kind::NetworkInterface => self.modify_tags::<NetworkInterface>(&key, id, f).await?,
            }
        }
        Ok(())
    }

    /// CreateTags (overwrites values of existing keys).
    pub async fn create_tags(
        &self,
        caller: &Caller,
        ids: &[String],
        tags: &[(String, String)],
    ) -> Result<()> {
        let tags = validation::tags(tags)?;
        if tags.is_empty() {
            return Err(Error::missing("Tag"));
        }
        self.for_each_resource(caller, ids, &|t| {
            for (k, v) in &tags {
                t.insert(k.clone(), v.clone());
            }
            if validation::user_tag_count(t.keys()) > validation::MAX_TAGS {
                return Err(Error::invalid_code(
                    "TagLimitExceeded",
                    format!(
                        "The maximum number of Tags for a resource has been reached ({})",
                        validation::MAX_TAGS
                    ),
                ));
            }
            Ok(())
        })
        .await
    }

    /// DeleteTags: a tag with `None` value is deleted whatever its value; with
    /// `Some(v)` only when equal. No tags = delete all the user's tags (the
    /// `aws:` ones stay, as on EC2).
    pub async fn delete_tags(
        &self,
        caller: &Caller,
        ids: &[String],
        tags: &[(String, Option<String>)],
    ) -> Result<()> {
        for (k, _) in tags {
            validation::tag(k, "")?;
        }
        self.for_each_resource(caller, ids, &|t| {
            if tags.is_empty() {
                t.retain(|k, _| validation::is_system_tag(k));
            }
            for (k, v) in tags {
                let matches = match v {
                    None => true,
                    Some(v) => t.get(k) == Some(v),
                };
                if matches {
                    t.remove(k);
                }
            }
            Ok(())
        })
        .await
    }

    /// DescribeTags with paging (token = index into the sorted list).
    pub async fn describe_tags(
        &self,
        caller: &Caller,
        filters: &[Filter],
        max_results: u32,
        next_token: Option<&str>,
    ) -> Result<(Vec<TagDescription>, Option<String>)> {
        let account = caller.account()?;
        filters::check(filters, TAG_FILTERS)?;
        validation::max_results(max_results)?;
        // (resource id, type, its tags) of every resource of the account.
        let mut resources: Vec<(String, &'static str, BTreeMap<String, String>)> = Vec::new();
        let insts = self.store.instances().of(&account).collect().await?;
        resources.extend(
            insts
                .into_iter()
                .map(|(_, v)| (v.value.id.to_string(), "instance", v.value.tags)),
        );
        let imgs = self.store.images().all().collect().await?;
        resources.extend(
            imgs.into_iter()
                .filter(|(_, v)| v.value.owner == account)
                .map(|(_, v)| (v.value.id.to_string(), "image", v.value.tags)),
        );
        let kps = self.store.keypairs().of(&account).collect().await?;
        resources.extend(
            kps.into_iter()
                .map(|(_, v)| (v.value.id.to_string(), "key-pair", v.value.tags)),
        );
        let public = self.store.public_net();
        resources.extend(
            public
                .eips_of(&account)
                .await?
                .into_iter()
                .map(|v| (v.value.id.to_string(), "elastic-ip", v.value.tags)),
        );
        resources.extend(
            public
                .igws_of(&account)
                .await?
                .into_iter()
                .map(|v| (v.value.id.to_string(), "internet-gateway", v.value.tags)),
        );
        resources.extend(
            public
                .tables_of(&account)
                .await?
                .into_iter()
                .map(|v| (v.value.id.to_string(), "route-table", v.value.tags)),
        );
        let enis = self.store.vpcs().interfaces_of(&account).await?;
        resources.extend(
            enis.into_iter()
                .map(|v| (v.value.id.to_string(), "network-interface", v.value.tags)),
        );
        let mut all = Vec::new();
        for (id, kind, tags) in resources {
            // `tag:KEY` filters select resources; the others select tags.
            let selected = filters.iter().all(|f| match f.name.strip_prefix("tag:") {
                Some(key) => tags
                    .get(key)
                    .is_some_and(|v| filters::any_matches(&f.values, &[v])),
                None => true,
            });
            if !selected {
                continue;
            }
            for (k, val) in tags {
                all.push(TagDescription {
                    resource_id: id.clone(),
                    resource_type: kind,
                    key: k,
                    value: val,
                });
            }
        }
        all.retain(|t| {
            filters.iter().all(|f| match f.name.as_str() {
                "resource-id" => filters::any_matches(&f.values, &[&t.resource_id]),
                "resource-type" => filters::any_matches(&f.values, &[t.resource_type]),
                "key" => filters::any_matches(&f.values, &[&t.key]),
                "value" => filters::any_matches(&f.values, &[&t.value]),
                other => other.starts_with("tag:"),
            })
        });
        all.sort();
        let start = match next_token {
            Some(t) => crate::domain::instances::decode_token(t)?
                .parse::<usize>()
                .map_err(|_| {
                    Error::invalid_code("InvalidNextToken", "the NextToken is not valid")
                })?,
            None => 0,
        };
        let page = if max_results == 0 {
            usize::MAX
        } else {
            max_results as usize
        };
        let end = start.saturating_add(page).min(all.len());
        let next =
            (end < all.len()).then(|| crate::domain::instances::encode_token(&end.to_string()));
        let out = all.get(start..end).map(|s| s.to_vec()).unwrap_or_default();
        Ok((out, next))
    }
}
