from django.urls import path

from . import views

app_name = "ops"
urlpatterns = [
    path("deployments/", views.dashboard, name="dashboard"),
    path("deployments/health/", views.health, name="health"),
    path("deployments/thresholds/", views.thresholds, name="thresholds"),
    path("deployments/alerts/", views.alerts, name="alerts"),
    path("alerts/<int:pk>/acknowledge/", views.acknowledge, name="alert-acknowledge"),
    path("deliveries/<int:pk>/alerts/", views.delivery_alerts, name="delivery-alerts"),
]
