"""Pulumi program that puts the mlapi model services on AWS, on EKS with Istio or on ECS Fargate behind an ALB."""
