# An EKS managed node group of SOCI nodes, for clusters without Karpenter. Its launch template carries
# the same userData as deploy/eks/karpenter-soci.yaml (one file, ../soci-userdata.mime); EKS adds the
# cluster details. Label and taint: the ones the canary selects (resources/defaults.py: SOCI_NODE_*).

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}

variable "cluster_name" {
  description = "EKS cluster the node group joins."
  type        = string
}

variable "node_role_arn" {
  description = "IAM role of the nodes (needs AmazonEKSWorkerNodePolicy, AmazonEC2ContainerRegistryPullOnly, AmazonEKS_CNI_Policy)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the nodes."
  type        = list(string)
}

variable "ami_release_version" {
  description = "EKS AL2023 AMI release with containerd 2.x (late 2025 or newer), e.g. 1.34.2-20261112; pinned, never moves on its own."
  type        = string
  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+-[0-9]{8}$", var.ami_release_version))
    error_message = "ami_release_version must look like 1.34.2-20261112."
  }
}

variable "instance_types" {
  description = "Instance types for the SOCI nodes."
  type        = list(string)
  default     = ["m7i.xlarge"]
}

resource "aws_launch_template" "streamable_soci" {
  name_prefix = "streamable-soci-"
  description = "EKS AL2023 nodes that lazy-load images with the soci snapshotter (SOCI index v2)"
  user_data   = base64encode(file("${path.module}/../soci-userdata.mime"))

  # IMDSv2 only, hop limit 1: pods cannot reach the node's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 100
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      "streamable.dev/soci" = "true"
    }
  }
}

resource "aws_eks_node_group" "streamable_soci" {
  cluster_name    = var.cluster_name
  node_group_name = "streamable-soci"
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids
  ami_type        = "AL2023_x86_64_STANDARD"
  release_version = var.ami_release_version
  instance_types  = var.instance_types

  launch_template {
    id      = aws_launch_template.streamable_soci.id
    version = aws_launch_template.streamable_soci.latest_version
  }

  scaling_config {
    min_size     = 1
    desired_size = 1
    max_size     = 3
  }

  labels = {
    "streamable.dev/soci" = "true"
  }

  taint {
    key    = "streamable.dev/soci"
    value  = "true"
    effect = "NO_SCHEDULE"
  }
}
