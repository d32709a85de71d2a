"""An AWS Budgets cost budget for the stack, so a bill over plan reaches a person before the invoice does.

Optional (config `monthlyBudgetUsd`). The budget counts the costs tagged `stack=<stack>`, which every resource
here carries; AWS Budgets sees a tag only once it is activated as a cost allocation tag (Billing console, "Cost
allocation tags"), so docs/deploy.md says to activate `stack`. It alerts on actual spend at each threshold
percentage, and once on the month's forecast passing 100%: to e-mail addresses and/or an SNS topic, whose policy
must let `budgets.amazonaws.com` publish (AWS Budgets user guide, "Creating an Amazon SNS topic for budget
notifications").
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class BudgetArgs:
    """Name, monthly limit, alert thresholds (percent of the limit) and who hears about them."""

    budget_name: str
    stack: str
    monthly_limit_usd: int
    thresholds_percent: tuple[int, ...]
    emails: tuple[str, ...]
    sns_topic_arn: str
    tags: dict[str, str]

    def __post_init__(self) -> None:
        # AWS Budgets: at most 5 notifications a budget (thresholds plus the forecast), 10 e-mail subscribers each.
        if not self.emails and not self.sns_topic_arn:
            raise ValueError("a budget needs an e-mail address or an SNS topic to alert")
        if not 1 <= len(self.thresholds_percent) <= 4 or len(self.emails) > 10:
            raise ValueError("a budget takes 1 to 4 thresholds and at most 10 e-mail addresses")


def notifications(args: BudgetArgs) -> list[aws.budgets.BudgetNotificationArgs]:
    """One ACTUAL notification per threshold, then one FORECASTED at 100%."""
    subscribers = {
        "subscriber_email_addresses": list(args.emails) or None,
        "subscriber_sns_topic_arns": [args.sns_topic_arn] if args.sns_topic_arn else None,
    }
    kinds = [("ACTUAL", t) for t in args.thresholds_percent] + [("FORECASTED", 100)]
    return [
        aws.budgets.BudgetNotificationArgs(comparison_operator="GREATER_THAN", notification_type=kind,
                                           threshold=float(threshold), threshold_type="PERCENTAGE", **subscribers)
        for kind, threshold in kinds
    ]


class Budget(pulumi.ComponentResource):
    """A monthly COST budget on the stack's tag, with alerts at thresholds."""

    budget_name: pulumi.Output[str]

    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:budget:Budget", name, None, opts)
        budget = aws.budgets.Budget(
            f"{name}-budget",
            name=args.budget_name,
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=str(args.monthly_limit_usd),
            limit_unit="USD",
            # Cost allocation tags reach Budgets as `user:<key>`, and a TagKeyValue filter is `user:<key>$<value>`.
            cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[f"user:stack${args.stack}"])],
            notifications=notifications(args),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.budget_name = budget.name
        self.register_outputs({"budget_name": self.budget_name})
