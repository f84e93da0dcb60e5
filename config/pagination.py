"""The one pagination of the API (its own module: DRF loads it from settings while
``rest_framework.viewsets`` is still importing)."""

from rest_framework.pagination import PageNumberPagination


class ApiPagination(PageNumberPagination):
    """``{"count", "next", "previous", "results"}``; ``?page_size=`` up to 500."""

    page_size_query_param = "page_size"
    max_page_size = 500
