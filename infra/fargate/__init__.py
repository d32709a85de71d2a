"""The `platform: fargate` stack: ECS cluster and services, the ALB, CloudWatch dashboard and alarms."""
