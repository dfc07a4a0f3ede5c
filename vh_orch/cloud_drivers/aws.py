"""The `aws` cloud: EC2 instances through boto3.

Launches carry the machine row's launch token as ClientToken and the cluster, row and
environment as tags, so an instance whose launch outlived its caller is found and
adopted by tag (ClientToken alone is not trusted to make launches idempotent).
Credentials come only from boto3's standard chain (profiles, environment, instance
role); vh-orch stores none. EC2's error codes map onto the CloudError family:
capacity → try the next zone or type, quota → stop launching, throttling and 5xx →
back off, anything else (permissions, a bad AMI) → fatal with AWS's own message.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from vh_orch import boto
from vh_orch.cloud_drivers.base import (
    TAG_CLUSTER,
    TAG_ENVIRONMENT,
    EnvironmentSpec,
    LaunchSpec,
    machine_id_from_tag,
)
from vh_orch.cloud_drivers.settings import AWSSettings
from vh_orch.cloud_drivers.vm import TAG_HOST_KEY, VMAccess, VMInfo, VMMachines, generate_host_key
from vh_orch.errors import CapacityError, CloudError, ConfigError, QuotaExceeded, TransientCloudError
from vh_orch.values import PENDING, RUNNING, STOPPING, TERMINATED, CloudInstance

log = logging.getLogger(__name__)

CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow",
                  "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity", "Unsupported"}
QUOTA_CODES = {"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
               "InsufficientFreeAddressesInSubnet"}
THROTTLED_CODES = {"RequestLimitExceeded", "Throttling", "ThrottlingException"}
TRANSIENT_CODES = {"ServiceUnavailable", "InternalError", "Unavailable", "InternalFailure"}
STATES = {"pending": PENDING, "running": RUNNING, "stopping": STOPPING, "stopped": STOPPING,
          "shutting-down": TERMINATED, "terminated": TERMINATED}
TERMINATE_BATCH = 500
DEFAULT_ROOT_DEVICE = "/dev/sda1"


def classify(exc: Exception, doing: str) -> CloudError:
    """The CloudError an EC2 failure means (and a message a person can act on)."""
    if isinstance(exc, NoCredentialsError):
        return CloudError(f"{doing}: no AWS credentials found (boto3 looks at AWS_PROFILE, AWS_ACCESS_KEY_ID, "
                          "~/.aws and the instance role)")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", str(exc))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"{doing}: {code}: {message}"
        if code in CAPACITY_CODES:
            return CapacityError(text)
        if code in QUOTA_CODES:
            return QuotaExceeded(text)
        if code in THROTTLED_CODES:  # refused before anything was done
            return TransientCloudError(text, maybe_created=False)
        if code in TRANSIENT_CODES or status >= 500:
            return TransientCloudError(text)
        return CloudError(text)
    if isinstance(exc, BotoCoreError):  # connection refused, timeouts
        return TransientCloudError(f"{doing}: {exc}")
    return CloudError(f"{doing}: {exc}")


class AWSDriver(VMMachines):
    def __init__(self, cluster_id: str, env: EnvironmentSpec) -> None:
        self.cluster_id = cluster_id
        self.environment = env.name
        assert isinstance(env.settings, AWSSettings), env.cloud
        self.aws = env.settings.aws
        if not env.region:
            raise ConfigError(f"environment {env.name!r}: an aws environment needs a `region`")
        super().__init__(VMAccess(env.settings.ssh, default_user="ubuntu"))
        config = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=10, read_timeout=60)
        self.ec2 = boto.session(env.region).client("ec2", endpoint_url=self.aws.endpoint_url, config=config)
        self.spot_max_price = self.aws.spot_max_price
        self._root_device: str | None = None
        self._gpus: dict[str, int] = {}  # instance type -> NVIDIA GPUs, as EC2 describes it

    # -- launch -----------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> CloudInstance:
        host_private, host_public = generate_host_key()
        tags = {**self.aws.tags, **spec.all_tags(),
                TAG_HOST_KEY: host_public, "Name": f"vh-orch-{spec.environment}-{spec.machine_id}"}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        params: dict[str, Any] = {
            "ImageId": self._image_id(),
            "InstanceType": spec.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": spec.launch_token,
            "UserData": self.access.user_data(host_private, host_public),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list},
                                  {"ResourceType": "volume", "Tags": tag_list}],
            "InstanceInitiatedShutdownBehavior": "terminate",  # a machine that powers off is gone, not parked
            # IMDSv2 only, and its token answered no further than one hop: a container (one hop
            # more, behind the bridge) never gets one. The DOCKER-USER rule (vm.py) stops it first.
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        }
        if spec.zone and spec.zone.startswith("subnet-"):
            params["SubnetId"] = spec.zone
        elif spec.zone:
            params["Placement"] = {"AvailabilityZone": spec.zone}
        if self.aws.security_group_ids:
            params["SecurityGroupIds"] = list(self.aws.security_group_ids)
        if self.aws.key_name:
            params["KeyName"] = self.aws.key_name
        profile = self.aws.iam_instance_profile
        if profile:
            params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        if self.aws.root_volume_gb:
            params["BlockDeviceMappings"] = [{"DeviceName": self._root_device_name(), "Ebs": {
                "VolumeSize": self.aws.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}]
        if spec.spot:
            options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if self.spot_max_price:
                options["MaxPrice"] = str(self.spot_max_price)
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        try:
            reply = self.ec2.run_instances(**params)
        except Exception as exc:
            raise classify(exc, f"launching {spec.instance_type} in {spec.zone or 'any zone'}") from None
        return self._instance(reply["Instances"][0])

    def _image_id(self) -> str:
        ami = self.aws.ami
        # An SSM parameter name (e.g. /aws/service/canonical/...) is resolved by EC2 itself.
        return f"resolve:ssm:{ami}" if ami.startswith("/") else ami

    def _root_device_name(self) -> str:
        if self._root_device is None:
            self._root_device = DEFAULT_ROOT_DEVICE
            ami = self._image_id()
            if ami.startswith("ami-"):
                try:
                    images = self.ec2.describe_images(ImageIds=[ami])["Images"]
                    self._root_device = images[0].get("RootDeviceName") or DEFAULT_ROOT_DEVICE
                except Exception as exc:
                    raise classify(exc, f"looking up AMI {ami}") from None
        return self._root_device

    # -- what an instance type has -----------------------------------------------------

    def expected_gpus(self, instance_type: str | None) -> int | None:
        """The NVIDIA GPUs of `instance_type` in EC2's `DescribeInstanceTypes` (GpuInfo; AMD's are not
        counted: nvidia-smi never sees them); None for a type this region does not know, or on an error."""
        if not instance_type:
            return None
        if instance_type not in self._gpus:
            try:
                found = self.ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
            except Exception as exc:
                log.info("environment %s: %s", self.environment,
                         classify(exc, f"looking up the GPUs of {instance_type}"))
                return None
            if not found:
                return None
            gpus = found[0].get("GpuInfo", {}).get("Gpus", [])
            self._gpus[instance_type] = sum(int(g.get("Count", 0)) for g in gpus
                                            if str(g.get("Manufacturer", "")).upper() == "NVIDIA")
        return self._gpus[instance_type]

    # -- list ---------------------------------------------------------------------------

    def list_instances(self) -> list[CloudInstance]:
        filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.cluster_id]},
                   {"Name": f"tag:{TAG_ENVIRONMENT}", "Values": [self.environment]}]
        found = []
        try:
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page["Reservations"]:
                    found.extend(self._instance(i) for i in reservation["Instances"])
        except Exception as exc:
            raise classify(exc, "listing instances") from None
        return found

    def _instance(self, raw: dict[str, Any]) -> CloudInstance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        state = STATES.get(raw.get("State", {}).get("Name", ""), PENDING)
        reason = raw.get("StateReason") or {}
        info = VMInfo(instance_id=raw["InstanceId"], private_ip=raw.get("PrivateIpAddress"),
                      public_ip=raw.get("PublicIpAddress"),
                      zone=raw.get("Placement", {}).get("AvailabilityZone"), tags=tags,
                      host_key=tags.get(TAG_HOST_KEY))
        address = self._remember(info, gone=state == TERMINATED)
        why = None
        if state in (TERMINATED, STOPPING):
            code = reason.get("Code", "")
            why = {"Server.SpotInstanceTermination": "spot interruption"}.get(code, f"the instance is "
                                                                                 f"{raw['State']['Name']}")
            why = f"{why} ({code}: {reason.get('Message', '')})" if code else why
        return CloudInstance(
            instance_id=info.instance_id,
            machine_id=machine_id_from_tag(tags.get("vh-orch-machine")),
            state=state,
            zone=info.zone,
            instance_type=raw.get("InstanceType"),
            address=address,
            launched_at=raw.get("LaunchTime"),
            state_reason=why,
        )

    # -- terminate ----------------------------------------------------------------------

    def terminate(self, instance_ids: list[str]) -> None:
        for start in range(0, len(instance_ids), TERMINATE_BATCH):
            batch = instance_ids[start:start + TERMINATE_BATCH]
            try:
                self.ec2.terminate_instances(InstanceIds=batch)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                    raise classify(exc, f"terminating {', '.join(batch)}") from None
                # Some are gone already: end the others one by one.
                for instance_id in batch:
                    self._terminate_one(instance_id)
            except Exception as exc:
                raise classify(exc, f"terminating {', '.join(batch)}") from None

    def _terminate_one(self, instance_id: str) -> None:
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                raise classify(exc, f"terminating {instance_id}") from None

    # -- reaching a machine -------------------------------------------------------------

    def _look_up(self, instance_id: str) -> None:
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except Exception as exc:
            raise classify(exc, f"looking up {instance_id}") from None
        for reservation in reservations:
            for raw in reservation["Instances"]:
                self._instance(raw)
