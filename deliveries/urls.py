from django.urls import path, re_path

from . import views

app_name = "deliveries"
ACTIONS = "|".join(views.ACTION_ACCESS)  # the action bar's actions (deliveries.lifecycle)
urlpatterns = [
    path("deliveries/", views.delivery_list, name="list"),
    path("deliveries/new/", views.delivery_create, name="create"),
    path("deliveries/waiting/", views.waiting_for_me, name="waiting"),
    path("deliveries/categories/", views.categories, name="categories"),
    path("deliveries/<int:pk>/", views.delivery_detail, name="detail"),
    path("deliveries/<int:pk>/edit/", views.delivery_edit, name="edit"),
    path("deliveries/<int:pk>/deployment-block/", views.deployment_block, name="deployment-block"),
    re_path(rf"^deliveries/(?P<pk>\d+)/(?P<action>{ACTIONS})/$", views.delivery_action, name="action"),
]
