from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("accounts.urls")),
    path("", include("audiences.urls")),
    path("", include("deliveries.urls")),
    path("", include("tracking.urls")),
    path("", include("kpis.urls")),
    path("", include("ops.urls")),
    path("api/", include("api.urls")),
    path("dev/", include("system.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "accounts.views.bad_request"
handler403 = "accounts.views.permission_denied"
handler404 = "accounts.views.page_not_found"
handler500 = "accounts.views.server_error"
