from rest_framework.routers import SimpleRouter

from live import api

router = SimpleRouter()
router.register("live-sessions", api.LiveSessionViewSet, basename="live-session")

urlpatterns = router.urls
