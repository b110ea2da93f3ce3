from django.contrib import admin

from .models import Alert, AlertThresholds


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("raised_at", "delivery", "criterion", "acknowledged_at", "acknowledged_by", "emailed_at")
    list_filter = ("criterion", "day")
    search_fields = ("delivery__label", "summary")
    raw_id_fields = ("delivery", "acknowledged_by")
    readonly_fields = ("raised_at", "day", "emailed_at")


@admin.register(AlertThresholds)
class AlertThresholdsAdmin(admin.ModelAdmin):
    list_display = (
        "bounce_rate",
        "bounce_min_processed",
        "start_pending_minutes",
        "min_throughput_per_minute",
        "updated_at",
        "updated_by",
    )
