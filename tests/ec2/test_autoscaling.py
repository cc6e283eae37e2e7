"""Auto Scaling scaling policies and scheduled actions through unmodified
boto3 and aws-cli (service `autoscaling` on the gateway's listener): every
call's request shape and answer parse as the real clients expect. The
group keeps `Launch` suspended, so nothing boots: the capacity changes are
read from DescribeAutoScalingGroups and the activities."""

import json
import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import NO_RETRY


@pytest.fixture(scope="session")
def autoscaling(endpoint, region):
    return boto3.client("autoscaling", endpoint_url=endpoint, region_name=region,
                        config=NO_RETRY)


@pytest.fixture
def group(ec2, autoscaling, hello_ami, zones, tag):
    """A group of 0 (Launch suspended) on a fresh template; removed after."""
    ec2.create_launch_template(LaunchTemplateName=tag, LaunchTemplateData={
        "ImageId": hello_ami, "InstanceType": "t3.nano"})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=tag, LaunchTemplate={"LaunchTemplateName": tag},
        MinSize=0, MaxSize=10, DesiredCapacity=0, AvailabilityZones=zones[:1],
        DefaultCooldown=120)
    autoscaling.suspend_processes(AutoScalingGroupName=tag, ScalingProcesses=["Launch"])
    yield tag
    try:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=tag, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName=tag)
    except Exception as e:  # noqa: BLE001 - best effort clean-up
        print(f"cleanup: group {tag}: {e}")


def desired(autoscaling, name):
    g = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return g["AutoScalingGroups"][0]["DesiredCapacity"]


def code(e):
    return e.value.response["Error"]["Code"]


def test_scaling_policies(autoscaling, group):
    tt = autoscaling.put_scaling_policy(
        AutoScalingGroupName=group, PolicyName="cpu", PolicyType="TargetTrackingScaling",
        EstimatedInstanceWarmup=60,
        TargetTrackingConfiguration={
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
            "TargetValue": 55.5})
    assert tt["PolicyARN"].endswith(f":autoScalingGroupName/{group}:policyName/cpu")
    assert tt["Alarms"] == []
    up = autoscaling.put_scaling_policy(
        AutoScalingGroupName=group, PolicyName="up", AdjustmentType="ChangeInCapacity",
        ScalingAdjustment=2, Cooldown=300)["PolicyARN"]
    autoscaling.put_scaling_policy(
        AutoScalingGroupName=group, PolicyName="steps", PolicyType="StepScaling",
        AdjustmentType="PercentChangeInCapacity", MinAdjustmentMagnitude=1,
        StepAdjustments=[{"MetricIntervalUpperBound": 0.0, "ScalingAdjustment": -50},
                         {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 100}])
    got = {p["PolicyName"]: p for p in
           autoscaling.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]}
    assert set(got) == {"cpu", "up", "steps"}
    assert got["cpu"]["TargetTrackingConfiguration"]["TargetValue"] == 55.5
    assert got["cpu"]["EstimatedInstanceWarmup"] == 60
    assert got["up"]["PolicyARN"] == up and got["up"]["Cooldown"] == 300
    assert got["steps"]["StepAdjustments"][1] == {"MetricIntervalLowerBound": 0.0,
                                                  "ScalingAdjustment": 100}

    autoscaling.execute_policy(AutoScalingGroupName=group, PolicyName="up", HonorCooldown=True)
    assert desired(autoscaling, group) == 2
    with pytest.raises(ClientError) as e:
        autoscaling.execute_policy(PolicyName=up, HonorCooldown=True)
    assert code(e) == "ScalingActivityInProgress"
    autoscaling.execute_policy(AutoScalingGroupName=group, PolicyName="steps",
                               MetricValue=95.0, BreachThreshold=80.0)
    assert desired(autoscaling, group) == 4
    with pytest.raises(ClientError) as e:
        autoscaling.execute_policy(AutoScalingGroupName=group, PolicyName="cpu")
    assert code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        autoscaling.put_scaling_policy(
            AutoScalingGroupName=group, PolicyName="net", PolicyType="TargetTrackingScaling",
            TargetTrackingConfiguration={
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageNetworkIn"},
                "TargetValue": 1000.0})
    assert code(e) == "ValidationError"
    causes = [a["Cause"] for a in
              autoscaling.describe_scaling_activities(AutoScalingGroupName=group)["Activities"]]
    assert any("executed policy up " in c for c in causes), causes
    assert any("executed policy steps " in c for c in causes), causes

    autoscaling.delete_policy(PolicyName=up)
    names = [p["PolicyName"] for p in
             autoscaling.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]]
    assert sorted(names) == ["cpu", "steps"]


def test_scheduled_actions_with_aws_cli(endpoint, autoscaling, group):
    def cli(*args):
        cmd = ["aws", "--endpoint-url", endpoint, "--output", "json", "autoscaling", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    rc, _, err = cli("put-scheduled-update-group-action", "--auto-scaling-group-name", group,
                     "--scheduled-action-name", "night", "--recurrence", "30 2 * * MON-FRI",
                     "--min-size", "0", "--desired-capacity", "1")
    assert rc == 0, err
    rc, _, err = cli("put-scheduled-update-group-action", "--auto-scaling-group-name", group,
                     "--scheduled-action-name", "launch", "--start-time", "2099-01-02T03:04:00Z",
                     "--max-size", "8", "--desired-capacity", "8")
    assert rc == 0, err
    rc, out, err = cli("describe-scheduled-actions", "--auto-scaling-group-name", group)
    assert rc == 0, err
    actions = {a["ScheduledActionName"]: a for a in json.loads(out)["ScheduledUpdateGroupActions"]}
    assert actions["night"]["Recurrence"] == "30 2 * * MON-FRI"
    assert "T02:30:00" in actions["night"]["StartTime"]
    assert actions["launch"]["StartTime"].startswith("2099-01-02T03:04:00")
    assert actions["launch"]["DesiredCapacity"] == 8
    rc, _, err = cli("put-scheduled-update-group-action", "--auto-scaling-group-name", group,
                     "--scheduled-action-name", "bad", "--recurrence", "61 * * * *",
                     "--desired-capacity", "1")
    assert rc != 0 and "ValidationError" in err, err
    rc, _, err = cli("delete-scheduled-action", "--auto-scaling-group-name", group,
                     "--scheduled-action-name", "night")
    assert rc == 0, err
    left = autoscaling.describe_scheduled_actions(AutoScalingGroupName=group)
    assert [a["ScheduledActionName"] for a in left["ScheduledUpdateGroupActions"]] == ["launch"]
    suspended = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    assert [p["ProcessName"] for p in
            suspended["AutoScalingGroups"][0]["SuspendedProcesses"]] == ["Launch"]
