import pytest
from django.urls import reverse

from deliveries.models import Delivery, State

pytestmark = pytest.mark.django_db


def test_the_dashboard_loads_the_other_apps_parts_by_url_once_the_send_started(ready_delivery, marketer, client):
    d = ready_delivery()
    client.force_login(marketer)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert f'/deliveries/{d.pk}/alerts/' not in html  # nothing to show before the send
    Delivery.objects.filter(pk=d.pk).update(state=State.FINISHED)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    for part in (f"/deliveries/{d.pk}/alerts/", f"/deliveries/{d.pk}/kpis/", f"/deliveries/{d.pk}/tracked-urls/", f"/deliveries/{d.pk}/tracking-logs/"):
        assert f'hx-get="{part}' in html, part
        assert client.get(part).status_code == 200, part
    assert "Finished sending" in html and "All messages have been processed." in html


def test_the_list_shows_mini_kpis_without_a_query_per_message(ready_delivery, marketer, client, django_assert_max_num_queries):
    for _ in range(6):
        ready_delivery()
    client.force_login(marketer)
    with django_assert_max_num_queries(12):
        response = client.get(reverse("deliveries:list"))
    assert response.content.decode().count('data-id="DM') == 6


def test_a_live_block_polls_and_a_final_one_does_not(ready_delivery, marketer, client):
    d = ready_delivery()
    client.force_login(marketer)
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS, processed_count=2)
    block = client.get(reverse("deliveries:deployment-block", args=[d.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in block and "2 of 5 processed" in block and "<html" not in block
    Delivery.objects.filter(pk=d.pk).update(state=State.FINISHED, processed_count=5)
    block = client.get(reverse("deliveries:deployment-block", args=[d.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "every 2s" not in block and "Finished sending" in block
