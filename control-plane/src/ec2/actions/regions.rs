//! Region-level reads: DescribeAvailabilityZones, DescribeRegions,
//! DescribeInstanceTypes (the catalogue in etcd).

use super::{domain_filters, dry_run_ok};
use crate::domain::filters::any_matches;
use crate::domain::Domain;
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

/// DescribeInstanceTypes over the catalogue (filtering and paging in the
/// domain); the fields SDKs and tools read, with what Nubis' microVMs have.
pub fn instance_types(d: &Domain, rid: &str, r: DescribeInstanceTypes) -> Result<String, Ec2Error> {
    let (types, next) = d.describe_instance_types(
        &r.instance_types,
        &domain_filters(r.filters),
        r.page.max_results.unwrap_or(0),
        r.page.next_token.as_deref(),
    )?;
    if r.dry_run {
        return dry_run_ok();
    }
    let strings = |w: &mut XmlWriter, name: &'static str, items: &[&str]| {
        // List members of these sets are plain strings.
        w.list(name, items.iter(), |w, v| {
            w.text(v);
        });
    };
    let mut w = XmlWriter::response("DescribeInstanceTypes", rid);
    w.list("instanceTypeSet", types, |w, t| {
        w.leaf("instanceType", &t.name);
        w.bool("currentGeneration", true);
        w.bool("freeTierEligible", t.free_tier_eligible());
        strings(w, "supportedUsageClasses", &["on-demand"]);
        strings(w, "supportedRootDeviceTypes", &["ebs"]);
        strings(w, "supportedVirtualizationTypes", &["hvm"]);
        w.bool("bareMetal", false);
        w.leaf("hypervisor", "nitro");
        w.elem("processorInfo", |w| {
            strings(w, "supportedArchitectures", &["x86_64"]);
        });
        w.elem("vCpuInfo", |w| {
            w.leaf("defaultVCpus", t.vcpus);
            w.leaf("defaultCores", t.cores());
            w.leaf("defaultThreadsPerCore", t.threads_per_core());
        });
        w.elem("memoryInfo", |w| {
            w.leaf("sizeInMiB", t.memory_mib);
        });
        w.bool("instanceStorageSupported", false);
        w.elem("ebsInfo", |w| {
            w.leaf("ebsOptimizedSupport", "unsupported");
            w.leaf("encryptionSupport", "unsupported");
            w.leaf("nvmeSupport", "unsupported");
        });
        w.elem("networkInfo", |w| {
            w.leaf("networkPerformance", "Up to 5 Gigabit");
            w.leaf("maximumNetworkInterfaces", 1);
            w.leaf("maximumNetworkCards", 1);
            w.leaf("defaultNetworkCardIndex", 0);
            w.leaf("ipv4AddressesPerInterface", 1);
            w.leaf("ipv6AddressesPerInterface", 0);
            w.bool("ipv6Supported", false);
            w.leaf("enaSupport", "unsupported");
            w.bool("efaSupported", false);
            w.bool("encryptionInTransitSupported", false);
        });
        w.elem("placementGroupInfo", |w| {
            strings(w, "supportedStrategies", &[]);
        });
        w.bool("hibernationSupported", false);
        w.bool("burstablePerformanceSupported", t.burstable());
        w.bool("dedicatedHostsSupported", false);
        w.bool("autoRecoverySupported", false);
        strings(w, "supportedBootModes", &["legacy-bios"]);
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
        w.leaf("instanceType", &o.instance_type);
        w.leaf("locationType", location_type.as_str());
        w.leaf("location", &o.location);
    });
    Ok(w.finish())
}
