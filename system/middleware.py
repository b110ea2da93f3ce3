"""The app's own 404 page in development too.

With DEBUG on (the default of `make run`), Django answers a missing page with its technical page
(the URL patterns, the settings' name): a person trying the app should see the page production
shows. Views that raise Http404 and addresses that match no URL both get templates/404.html.
"""

from django.conf import settings
from django.http import Http404

from accounts.views import page_not_found


class NotFoundPageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.DEBUG and response.status_code == 404 and getattr(request, "resolver_match", None) is None:
            return self.page(request)  # no URL matched: Django rendered its technical page
        return response

    def process_exception(self, request, exception):
        if settings.DEBUG and isinstance(exception, Http404):
            return self.page(request, exception)
        return None

    @staticmethod
    def page(request, exception=None):
        return page_not_found(request, exception)
