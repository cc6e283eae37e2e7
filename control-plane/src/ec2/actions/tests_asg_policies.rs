//! Scaling policies and scheduled actions over the gateway (signed for the
//! `autoscaling` service): the forms, the XML answers, the Auto Scaling
//! error documents, and tenant isolation; RunInstances with a
//! `LaunchTemplate` (EC2 service).

use super::{cloud, texts, ASG, V};

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_policies_and_scheduled_actions_over_the_gateway() {
    let Some(c) = cloud().await else {
        return;
    };
    let image = texts(
        &c.ok(&format!("Action=DescribeImages&{V}")).await,
        "imageId",
    )[0]
    .clone();
    c.ok(&format!(
        "Action=CreateLaunchTemplate&{V}&LaunchTemplateName=web&LaunchTemplateData.ImageId={image}\
         &LaunchTemplateData.InstanceType=t3.nano"
    ))
    .await;
    let zone = c.replica.as_ref().unwrap().domain.config().zones[0].clone();
    let ok = |body: String| {
        let c = &c;
        async move {
            let (s, xml) = c.asg_as(&c.a, &body).await;
            assert_eq!(s, 200, "{body} -> {xml}");
            xml
        }
    };
    let code = |body: String| {
        let c = &c;
        async move {
            let (s, xml) = c.asg_as(&c.a, &body).await;
            assert_eq!(s, 400, "{body} -> {xml}");
            assert!(xml.contains("<Type>Sender</Type>"), "{xml}");
            texts(&xml, "Code").join(",")
        }
    };
    ok(format!(
        "Action=CreateAutoScalingGroup&{ASG}&AutoScalingGroupName=g\
         &LaunchTemplate.LaunchTemplateName=web&MinSize=0&MaxSize=8&DesiredCapacity=0\
         &DefaultCooldown=120&AvailabilityZones.member.1={zone}"
    ))
    .await;
    ok(format!(
        "Action=SuspendProcesses&{ASG}&AutoScalingGroupName=g&ScalingProcesses.member.1=Launch"
    ))
    .await;
    let xml = ok(format!(
        "Action=DescribeAutoScalingGroups&{ASG}&AutoScalingGroupNames.member.1=g"
    ))
    .await;
    assert_eq!(texts(&xml, "ProcessName"), ["Launch"], "{xml}");
    assert_eq!(texts(&xml, "DefaultCooldown"), ["120"], "{xml}");

    // Three policy types.
    let xml = ok(format!(
        "Action=PutScalingPolicy&{ASG}&AutoScalingGroupName=g&PolicyName=up\
         &AdjustmentType=ChangeInCapacity&ScalingAdjustment=2&Cooldown=300"
    ))
    .await;
    let up_arn = texts(&xml, "PolicyARN")[0].clone();
    assert!(
        up_arn.starts_with("arn:aws:autoscaling:") && up_arn.ends_with(":policyName/up"),
        "{xml}"
    );
    ok(format!(
        "Action=PutScalingPolicy&{ASG}&AutoScalingGroupName=g&PolicyName=cpu\
         &PolicyType=TargetTrackingScaling&EstimatedInstanceWarmup=60\
         &TargetTrackingConfiguration.PredefinedMetricSpecification.PredefinedMetricType=ASGAverageCPUUtilization\
         &TargetTrackingConfiguration.TargetValue=50.5"
    ))
    .await;
    ok(format!(
        "Action=PutScalingPolicy&{ASG}&AutoScalingGroupName=g&PolicyName=steps\
         &PolicyType=StepScaling&AdjustmentType=PercentChangeInCapacity&MinAdjustmentMagnitude=1\
         &StepAdjustments.member.1.MetricIntervalUpperBound=0&StepAdjustments.member.1.ScalingAdjustment=-50\
         &StepAdjustments.member.2.MetricIntervalLowerBound=0&StepAdjustments.member.2.ScalingAdjustment=100"
    ))
    .await;
    let xml = ok(format!(
        "Action=DescribePolicies&{ASG}&AutoScalingGroupName=g"
    ))
    .await;
    assert_eq!(texts(&xml, "PolicyName"), ["up", "cpu", "steps"], "{xml}");
    assert_eq!(
        texts(&xml, "PolicyType"),
        ["SimpleScaling", "TargetTrackingScaling", "StepScaling"],
        "{xml}"
    );
    assert_eq!(texts(&xml, "TargetValue"), ["50.5"], "{xml}");
    assert_eq!(
        texts(&xml, "PredefinedMetricType"),
        ["ASGAverageCPUUtilization"],
        "{xml}"
    );
    assert_eq!(texts(&xml, "MetricIntervalUpperBound"), ["0"], "{xml}");
    let xml = ok(format!(
        "Action=DescribePolicies&{ASG}&PolicyTypes.member.1=StepScaling"
    ))
    .await;
    assert_eq!(texts(&xml, "PolicyName"), ["steps"], "{xml}");

    // Execute: +2 (cooldown starts), refused inside the cooldown when
    // honoured; step +100 % of 2 = 4.
    ok(format!(
        "Action=ExecutePolicy&{ASG}&AutoScalingGroupName=g&PolicyName=up"
    ))
    .await;
    assert_eq!(
        code(format!(
            "Action=ExecutePolicy&{ASG}&PolicyName={}&HonorCooldown=true",
            enc(&up_arn)
        ))
        .await,
        "ScalingActivityInProgress"
    );
    ok(format!(
        "Action=ExecutePolicy&{ASG}&AutoScalingGroupName=g&PolicyName=steps&MetricValue=90&BreachThreshold=80"
    ))
    .await;
    let xml = ok(format!(
        "Action=DescribeAutoScalingGroups&{ASG}&AutoScalingGroupNames.member.1=g"
    ))
    .await;
    assert_eq!(texts(&xml, "DesiredCapacity"), ["4"], "{xml}");

    // Bad input: each a ValidationError.
    for bad in [
        "&PolicyName=x&PolicyType=TargetTrackingScaling&TargetTrackingConfiguration.PredefinedMetricSpecification.PredefinedMetricType=ALBRequestCountPerTarget&TargetTrackingConfiguration.TargetValue=10",
        "&PolicyName=x&PolicyType=TargetTrackingScaling&TargetTrackingConfiguration.PredefinedMetricSpecification.PredefinedMetricType=ASGAverageCPUUtilization&TargetTrackingConfiguration.TargetValue=abc",
        "&PolicyName=x&AdjustmentType=ChangeInCapacity",
        "&PolicyName=x&AdjustmentType=ChangeInCapacity&ScalingAdjustment=1.5",
        "&PolicyName=x&PolicyType=StepScaling&AdjustmentType=ChangeInCapacity&StepAdjustments.member.1.MetricIntervalLowerBound=0&StepAdjustments.member.1.MetricIntervalUpperBound=5&StepAdjustments.member.1.ScalingAdjustment=1&StepAdjustments.member.2.MetricIntervalLowerBound=6&StepAdjustments.member.2.ScalingAdjustment=2",
    ] {
        assert_eq!(
            code(format!(
                "Action=PutScalingPolicy&{ASG}&AutoScalingGroupName=g{bad}"
            ))
            .await,
            "ValidationError",
            "{bad}"
        );
    }
    assert_eq!(
        code(format!(
            "Action=ExecutePolicy&{ASG}&AutoScalingGroupName=g&PolicyName=cpu"
        ))
        .await,
        "ValidationError"
    );

    // Scheduled actions.
    ok(format!(
        "Action=PutScheduledUpdateGroupAction&{ASG}&AutoScalingGroupName=g&ScheduledActionName=night\
         &Recurrence={}&MinSize=0&DesiredCapacity=1",
        enc("30 2 * * MON-FRI")
    ))
    .await;
    ok(format!(
        "Action=PutScheduledUpdateGroupAction&{ASG}&AutoScalingGroupName=g&ScheduledActionName=launch\
         &StartTime=2099-01-02T03:04:00Z&MaxSize=8&DesiredCapacity=8"
    ))
    .await;
    let xml = ok(format!(
        "Action=DescribeScheduledActions&{ASG}&AutoScalingGroupName=g"
    ))
    .await;
    assert_eq!(
        texts(&xml, "ScheduledActionName"),
        ["night", "launch"],
        "{xml}"
    );
    assert_eq!(texts(&xml, "Recurrence"), ["30 2 * * MON-FRI"], "{xml}");
    assert!(texts(&xml, "StartTime")[0].contains("T02:30:00"), "{xml}");
    assert!(
        texts(&xml, "StartTime")[1].starts_with("2099-01-02T03:04:00"),
        "{xml}"
    );
    for bad in [
        "&ScheduledActionName=x&StartTime=tomorrow&DesiredCapacity=1",
        "&ScheduledActionName=x&StartTime=2001-01-01T00:00:00Z&DesiredCapacity=1",
        "&ScheduledActionName=x&Recurrence=every+day&DesiredCapacity=1",
        "&ScheduledActionName=x&Recurrence=0+2+*+*+*",
        "&ScheduledActionName=x&Recurrence=0+2+*+*+*&DesiredCapacity=1&TimeZone=Mars%2FOlympus",
    ] {
        assert_eq!(
            code(format!(
                "Action=PutScheduledUpdateGroupAction&{ASG}&AutoScalingGroupName=g{bad}"
            ))
            .await,
            "ValidationError",
            "{bad}"
        );
    }

    // The other tenant sees nothing and touches nothing.
    for q in ["DescribePolicies", "DescribeScheduledActions"] {
        let (s, xml) = c.asg_as(&c.b, &format!("Action={q}&{ASG}")).await;
        assert_eq!(s, 200, "{xml}");
        assert!(texts(&xml, "AutoScalingGroupName").is_empty(), "{xml}");
    }
    for q in [
        format!("Action=DeletePolicy&{ASG}&PolicyName={}", enc(&up_arn)),
        format!("Action=ExecutePolicy&{ASG}&PolicyName={}", enc(&up_arn)),
        format!(
            "Action=DeleteScheduledAction&{ASG}&AutoScalingGroupName=g&ScheduledActionName=night"
        ),
        format!("Action=DescribePolicies&{ASG}&AutoScalingGroupName=g"),
    ] {
        let (s, xml) = c.asg_as(&c.b, &q).await;
        assert_eq!(
            (s, texts(&xml, "Code")),
            (400, vec!["ValidationError".to_string()]),
            "{q}: {xml}"
        );
    }

    // Deletes.
    ok(format!(
        "Action=DeletePolicy&{ASG}&PolicyName={}",
        enc(&up_arn)
    ))
    .await;
    ok(format!(
        "Action=DeleteScheduledAction&{ASG}&AutoScalingGroupName=g&ScheduledActionName=night"
    ))
    .await;
    let xml = ok(format!("Action=DescribePolicies&{ASG}")).await;
    assert_eq!(texts(&xml, "PolicyName"), ["cpu", "steps"], "{xml}");
    let xml = ok(format!("Action=DescribeScheduledActions&{ASG}")).await;
    assert_eq!(texts(&xml, "ScheduledActionName"), ["launch"], "{xml}");
    assert_eq!(
        code(format!(
            "Action=DeletePolicy&{ASG}&PolicyName={}",
            enc(&up_arn)
        ))
        .await,
        "ValidationError"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_instances_with_a_launch_template() {
    let Some(c) = cloud().await else {
        return;
    };
    let image = texts(
        &c.ok(&format!("Action=DescribeImages&{V}")).await,
        "imageId",
    )[0]
    .clone();
    let xml = c
        .ok(&format!(
            "Action=CreateLaunchTemplate&{V}&LaunchTemplateName=web&LaunchTemplateData.ImageId={image}\
             &LaunchTemplateData.InstanceType=t3.nano&LaunchTemplateData.TagSpecification.1.ResourceType=instance\
             &LaunchTemplateData.TagSpecification.1.Tag.1.Key=from&LaunchTemplateData.TagSpecification.1.Tag.1.Value=lt\
             &LaunchTemplateData.TagSpecification.1.Tag.2.Key=team&LaunchTemplateData.TagSpecification.1.Tag.2.Value=a"
        ))
        .await;
    let lt = texts(&xml, "launchTemplateId")[0].clone();
    c.ok(&format!(
        "Action=CreateLaunchTemplateVersion&{V}&LaunchTemplateId={lt}&SourceVersion=1&LaunchTemplateData.InstanceType=t3.micro"
    ))
    .await;
    let run = |q: &str| format!("Action=RunInstances&{V}&MinCount=1&MaxCount=1{q}");

    // $Default (version 1): everything from the template, and the tags EC2 adds.
    let xml = c.ok(&run("&LaunchTemplate.LaunchTemplateName=web")).await;
    assert_eq!(texts(&xml, "imageId"), [image.as_str()], "{xml}");
    assert_eq!(texts(&xml, "instanceType"), ["t3.nano"], "{xml}");
    assert!(xml.contains("<key>from</key><value>lt</value>"), "{xml}");
    assert!(
        xml.contains(&format!(
            "<key>aws:ec2launchtemplate:id</key><value>{lt}</value>"
        )),
        "{xml}"
    );
    assert!(
        xml.contains("<key>aws:ec2launchtemplate:version</key><value>1</value>"),
        "{xml}"
    );
    // $Latest by id.
    let xml = c
        .ok(&run(&format!(
            "&LaunchTemplate.LaunchTemplateId={lt}&LaunchTemplate.Version=%24Latest"
        )))
        .await;
    assert_eq!(texts(&xml, "instanceType"), ["t3.micro"], "{xml}");
    // Explicit parameters override the template (type, a tag of the same key).
    let xml = c
        .ok(&run(
            "&LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.Version=2&InstanceType=t3.small\
             &TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=from&TagSpecification.1.Tag.1.Value=explicit",
        ))
        .await;
    assert_eq!(texts(&xml, "instanceType"), ["t3.small"], "{xml}");
    assert!(
        xml.contains("<key>from</key><value>explicit</value>"),
        "{xml}"
    );
    assert!(!xml.contains("<value>lt</value>"), "{xml}");
    assert!(xml.contains("<key>team</key><value>a</value>"), "{xml}");
    // DryRun resolves the template.
    let (s, code) = c
        .err(&run("&LaunchTemplate.LaunchTemplateName=web&DryRun=true"))
        .await;
    assert_eq!((s, code.as_str()), (412, "DryRunOperation"));

    // Bad input.
    for (q, want) in [
        ("&LaunchTemplate.LaunchTemplateName=nope", "InvalidLaunchTemplateName.NotFoundException"),
        ("&LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.Version=9", "InvalidLaunchTemplateVersion.NotFound"),
        ("&LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.Version=x", "InvalidLaunchTemplateVersion.Malformed"),
        ("&LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.LaunchTemplateId=lt-0123456789abcdef0", "InvalidParameterCombination"),
        ("&LaunchTemplate.Version=1", "MissingParameter"),
        ("", "MissingParameter"),
        ("&LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.Colour=red", "UnknownParameter"),
    ] {
        assert_eq!(c.err(&run(q)).await.1, want, "{q}");
    }
    // The other tenant cannot launch from this account's template.
    let (_, code) = c
        .err_as(&c.b, &run("&LaunchTemplate.LaunchTemplateName=web"))
        .await;
    assert_eq!(code, "InvalidLaunchTemplateName.NotFoundException");
    let (_, code) = c
        .err_as(
            &c.b,
            &run(&format!("&LaunchTemplate.LaunchTemplateId={lt}")),
        )
        .await;
    assert_eq!(code, "InvalidLaunchTemplateId.NotFound");
}
