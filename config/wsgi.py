import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# The open pixel and the click redirect answered before the middleware stack (tracking/wsgi.py).
from tracking.wsgi import tracking_fast_path  # noqa: E402

application = tracking_fast_path(application)
