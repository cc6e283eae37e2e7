//! Region-level reads: DescribeAvailabilityZones, DescribeRegions,
//! DescribeInstanceTypes (the fixed catalogue).

use super::{domain_filters, dry_run_ok};
use crate::domain::filters::any_matches;
use crate::domain::{catalogue, Domain};
use crate::ec2::error::{Ec2Error, ErrorCode};
use crate::ec2::requests::{DescribeInstanceTypes, DescribeNamed};
use crate::ec2::xml::XmlWriter;

/// DescribeAvailabilityZones: the region's zones; a zone with no live,
/// schedulable node is `impaired`.
pub async fn zones(d: &Domain, rid: &str, r: DescribeNamed) -> Result<String, Ec2Error> {
    let zones = d
        .describe_zones(&r.names, &domain_filters(r.filters))
        .await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeAvailabilityZones", rid);
    w.list("availabilityZoneInfo", &zones, |w, z| {
        w.leaf("zoneName", &z.name);
        w.leaf("zoneState", z.state);
        w.leaf("regionName", &z.region);
        w.leaf("zoneId", &z.zone_id);
        w.leaf("zoneType", "availability-zone");
        w.leaf("optInStatus", "opt-in-not-required");
        w.empty("messageSet");
    });
    Ok(w.finish())
}

/// DescribeRegions: this endpoint's one region.
pub fn regions(d: &Domain, rid: &str, r: DescribeNamed) -> Result<String, Ec2Error> {
    let region = &d.config().region;
    if let Some(n) = r.names.iter().find(|n| *n != region) {
        return Err(Ec2Error::new(
            ErrorCode::InvalidParameterValue,
            format!("Invalid region: {n}"),
        ));
    }
    if r.dry_run {
        return dry_run_ok();
    }
    let show = r.filters.iter().all(|f| match f.name.as_str() {
        "region-name" => any_matches(&f.values, &[region]),
        "opt-in-status" => any_matches(&f.values, &["opt-in-not-required"]),
        _ => false,
    });
    let mut w = XmlWriter::response("DescribeRegions", rid);
    w.list("regionInfo", show.then_some(region), |w, name| {
        w.leaf("regionName", name);
        w.empty("regionEndpoint");
        w.leaf("optInStatus", "opt-in-not-required");
    });
    Ok(w.finish())
}

/// DescribeInstanceTypes over the catalogue (filtering and paging in the domain).
pub fn instance_types(rid: &str, r: DescribeInstanceTypes) -> Result<String, Ec2Error> {
    let (types, next) = catalogue::describe(
        &r.instance_types,
        &domain_filters(r.filters),
        r.page.max_results.unwrap_or(0),
        r.page.next_token.as_deref(),
    )?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeInstanceTypes", rid);
    w.list("instanceTypeSet", types, |w, t| {
        w.leaf("instanceType", t.name);
        w.bool("currentGeneration", true);
        w.elem("vCpuInfo", |w| {
            w.leaf("defaultVCpus", t.vcpus);
            w.leaf("defaultCores", t.vcpus);
            w.leaf("defaultThreadsPerCore", 1);
        });
        w.elem("memoryInfo", |w| {
            w.leaf("sizeInMiB", t.memory_mib);
        });
        w.elem("processorInfo", |w| {
            w.list("supportedArchitectures", ["x86_64"], |w, a| {
                // List members of supportedArchitectures are plain strings.
                w.text(a);
            });
        });
        w.leaf("hypervisor", "nitro");
        w.list("supportedVirtualizationTypes", ["hvm"], |w, v| {
            w.text(v);
        });
        w.bool("instanceStorageSupported", false);
    });
    if let Some(next) = next {
        w.leaf("nextToken", next);
    }
    Ok(w.finish())
}

/// DescribeInstanceTypeOfferings (one page: the catalogue is small).
pub fn offerings(
    d: &Domain,
    rid: &str,
    r: crate::ec2::requests::DescribeInstanceTypeOfferings,
) -> Result<String, Ec2Error> {
    use crate::domain::offerings::LocationType;
    let location_type = LocationType::parse(&r.location_type)?;
    let offerings = d.instance_type_offerings(location_type, &domain_filters(r.filters))?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeInstanceTypeOfferings", rid);
    w.list("instanceTypeOfferingSet", offerings, |w, o| {
        w.leaf("instanceType", o.instance_type);
        w.leaf("locationType", location_type.as_str());
        w.leaf("location", &o.location);
    });
    Ok(w.finish())
}
