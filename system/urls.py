from django.urls import path

from . import views

urlpatterns = [
    path("mailbox/", views.mailbox, name="mailbox"),
    path("mailbox/<str:name>/", views.mailbox_message, name="mailbox-message"),
    path("mailbox/<str:name>/html/", views.mailbox_html, name="mailbox-html"),
]
