from django.urls import path

from . import views

app_name = "audiences"
urlpatterns = [
    path("profiles/", views.profile_list, name="profile-list"),
    path("profiles/new/", views.profile_create, name="profile-create"),
    path("profiles/<int:pk>/", views.profile_detail, name="profile-detail"),
    path("profiles/<int:pk>/edit/", views.profile_edit, name="profile-edit"),
    path("audiences/", views.audience_list, name="audience-list"),
    path("audiences/new/", views.audience_create, name="audience-create"),
    path("audiences/conditions/builder/", views.conditions_builder, name="conditions-builder"),
    path("audiences/conditions/count/", views.conditions_count, name="conditions-count"),
    path("audiences/<int:pk>/", views.audience_detail, name="audience-detail"),
    path("audiences/<int:pk>/edit/", views.audience_edit, name="audience-edit"),
    path("audiences/<int:pk>/delete/", views.audience_delete, name="audience-delete"),
    path("audiences/<int:pk>/members/add/", views.audience_members_add, name="audience-members-add"),
    path("audiences/<int:pk>/members/<int:profile_pk>/remove/", views.audience_members_remove, name="audience-members-remove"),
    path("imports/new/", views.import_create, name="import-create"),
    path("imports/<int:pk>/", views.import_detail, name="import-detail"),
    path("imports/<int:pk>/rejected.csv", views.import_rejections_csv, name="import-rejections-csv"),
    path("quarantine/", views.quarantine_list, name="quarantine-list"),
    path("quarantine/<int:pk>/status/", views.quarantine_status, name="quarantine-status"),
    path("quarantine/<int:pk>/delete/", views.quarantine_delete, name="quarantine-delete"),
]
