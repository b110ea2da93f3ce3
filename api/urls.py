from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import audiences, deliveries, kpis, ops, tracking, views

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("me/", views.MeView.as_view(), name="api-me"),
    path("me/token/", views.MyTokenView.as_view(), name="api-my-token"),
    path("users/<int:pk>/token/", views.UserTokenView.as_view(), name="api-user-token"),
    path("users/", views.UserListView.as_view(), name="api-users"),
    path("users/<int:pk>/groups/", views.UserGroupsView.as_view(), name="api-user-groups"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # one module per app, each over that app's services and selectors
    *audiences.urlpatterns,
    *deliveries.urlpatterns,
    *tracking.urlpatterns,
    *kpis.urlpatterns,
    *ops.urlpatterns,
]
