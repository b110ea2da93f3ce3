"""Small helpers that read settings from the environment (no extra dependency)."""

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

TRUE = {"1", "true", "yes", "on"}


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in TRUE


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def secret_key_from_file(path: Path) -> str:
    """Return the development secret key stored in `path`, generating it on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(64)
    path.write_text(key)
    path.chmod(0o600)
    return key


def parse_email_url(url: str) -> dict:
    """Turn EMAIL_URL into Django email settings.

    smtp://user:password@host:port      plain SMTP (STARTTLS with ?tls=1)
    smtps://user:password@host:port     SMTP over TLS
    …?verify=0                          accept a relay certificate that does not verify (self-signed)
    …?cafile=/path/ca.pem               verify the relay's certificate against this CA
    console://                          print messages to the console
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == "console":
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if scheme == "locmem":
        return {"EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
    if scheme not in {"smtp", "smtps"}:
        raise ValueError(f"EMAIL_URL must start with smtp://, smtps:// or console://, not {scheme!r}.")
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parts.hostname or "127.0.0.1",
        "EMAIL_PORT": parts.port or (465 if scheme == "smtps" else 25),
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_SSL": scheme == "smtps",
        "EMAIL_USE_TLS": scheme == "smtp" and query.get("tls", "") in TRUE,
        "EMAIL_TIMEOUT": int(query.get("timeout", "30")),
        "EMAIL_SSL_VERIFY": query.get("verify", "1") in TRUE,
        "EMAIL_SSL_CAFILE": query.get("cafile", ""),
    }


def parse_cache_url(url: str) -> dict:
    """Turn CACHE_URL into a Django cache: redis://host:6379/0 (rediss:// too), file:///path,
    db://table_name, locmem://."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss"):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    if scheme == "file":
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": rest or "/tmp/dispatch-cache"}
    if scheme == "db":
        return {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": rest or "dispatch_cache"}
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": rest or "dispatch"}
    raise ValueError(f"CACHE_URL must start with redis://, rediss://, file://, db:// or locmem://, not {scheme!r}.")
