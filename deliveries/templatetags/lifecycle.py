"""`{% load lifecycle %}{% delivery_actions d "pause" "stop" as actions %}`: which of these actions
the signed-in user may take on message `d` now (deliveries.selectors.delivery_actions; every
action when none is named), for pages that list messages with their buttons (the deployment
dashboard, the alerts). `{% if "pause" in actions %}`."""

from django import template

from ..lifecycle import USER_ACTIONS
from ..selectors import delivery_actions as actions_of

register = template.Library()


@register.simple_tag(takes_context=True)
def delivery_actions(context, delivery, *among: str) -> set[str]:
    request = context.get("request")
    if request is None:
        return set()
    return actions_of(delivery=delivery, user=request.user, among=among or USER_ACTIONS)
