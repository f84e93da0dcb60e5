from rest_framework.routers import DefaultRouter

from trials import api

router = DefaultRouter()
router.register("trials", api.TrialViewSet, basename="trial")
router.register("sites", api.SiteViewSet, basename="site")
router.register("subjects", api.SubjectViewSet, basename="subject")
router.register("consent-documents", api.ConsentDocumentViewSet, basename="consent-document")
router.register("consents", api.ConsentViewSet, basename="consent")
router.register("nanoparticle-lots", api.NanoparticleLotViewSet, basename="nanoparticle-lot")
router.register("cell-batches", api.CellBatchViewSet, basename="cell-batch")
router.register("injections", api.InjectionViewSet, basename="injection")

urlpatterns = [
    *router.urls,
]
