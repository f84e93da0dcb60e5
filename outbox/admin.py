from django.contrib import admin

from outbox.models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "args", "queue", "created_at", "due_at", "attempts", "sent_at", "last_error")
    list_filter = ("task", "queue")
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]
