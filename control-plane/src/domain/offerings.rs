//! DescribeInstanceTypeOfferings: where each type of the catalogue (this
//! replica's cache of etcd's) is offered.
//!
//! Owns the rule that a type is offered in a zone only where some
//! registered host could ever fit it (its whole capacity, not what is free
//! now), and in the region where any zone offers it.

use crate::domain::filters::{self, Filter};
use crate::domain::Domain;
use crate::error::{Error, Result};

/// Filter names DescribeInstanceTypeOfferings supports.
pub const OFFERING_FILTERS: &[&str] = &["location", "instance-type"];

/// Where offerings are located.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationType {
    /// `region` (EC2's default).
    Region,
    /// `availability-zone`.
    AvailabilityZone,
    /// `availability-zone-id`.
    AvailabilityZoneId,
}

impl LocationType {
    /// Parses EC2's name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "region" => Ok(LocationType::Region),
            "availability-zone" => Ok(LocationType::AvailabilityZone),
            "availability-zone-id" => Ok(LocationType::AvailabilityZoneId),
            "outpost" => Err(Error::invalid_code(
                "Unsupported",
                "LocationType outpost is not supported by this endpoint",
            )),
            _ => Err(Error::invalid(format!("Invalid LocationType '{s}'"))),
        }
    }

    /// EC2's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationType::Region => "region",
            LocationType::AvailabilityZone => "availability-zone",
            LocationType::AvailabilityZoneId => "availability-zone-id",
        }
    }
}

/// One offering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offering {
    /// Type name.
    pub instance_type: String,
    /// Region, zone name or zone id.
    pub location: String,
}

impl Domain {
    /// Offerings at `location_type`, filtered, in catalogue then location order.
    pub fn instance_type_offerings(
        &self,
        location_type: LocationType,
        filters: &[Filter],
    ) -> Result<Vec<Offering>> {
        filters::check(filters, OFFERING_FILTERS)?;
        let views = self.nodes.views();
        let region = &self.cfg.region;
        let mut out = Vec::new();
        for t in self.types.all() {
            let fits_in = |zone: &str| {
                views.iter().any(|v| {
                    v.node.availability_zone == zone
                        && v.node.capacity.vcpus >= t.vcpus
                        && v.node.capacity.memory_mib >= t.memory_mib
                })
            };
            let zones: Vec<(usize, &String)> = self
                .cfg
                .zones
                .iter()
                .enumerate()
                .filter(|(_, z)| fits_in(z))
                .collect();
            let locations: Vec<String> = match location_type {
                LocationType::Region if zones.is_empty() => Vec::new(),
                LocationType::Region => vec![region.clone()],
                LocationType::AvailabilityZone => zones.iter().map(|(_, z)| (*z).clone()).collect(),
                LocationType::AvailabilityZoneId => zones
                    .iter()
                    .map(|(i, _)| format!("{region}-az{}", i + 1))
                    .collect(),
            };
            for location in locations {
                let keep = filters.iter().all(|f| match f.name.as_str() {
                    "location" => filters::any_matches(&f.values, &[&location]),
                    "instance-type" => filters::any_matches(&f.values, &[&t.name]),
                    _ => false,
                });
                if keep {
                    out.push(Offering {
                        instance_type: t.name.clone(),
                        location,
                    });
                }
            }
        }
        Ok(out)
    }
}
