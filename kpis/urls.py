from django.urls import path

from . import views

app_name = "kpis"
urlpatterns = [
    path("deliveries/<int:pk>/kpis/", views.deployment_kpis, name="deployment-kpis"),
    path("deliveries/<int:pk>/deployment/", views.deployment, name="deployment"),
    path("deliveries/<int:pk>/deployment/compute-stats/", views.compute_stats, name="compute-stats"),
    path("deliveries/<int:pk>/deployment/charts/", views.deployment_charts, name="deployment-charts"),
    path("deliveries/<int:pk>/deployment/<slug:tab>.csv", views.deployment_csv, name="deployment-csv"),
]
