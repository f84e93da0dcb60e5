"""The one pagination of the API (its own module: DRF loads it from settings while
``rest_framework.viewsets`` is still importing)."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

from config.filtering import single_value


def _positive(raw: str) -> bool:
    return raw.isascii() and raw.isdigit() and int(raw) >= 1


class ApiPagination(PageNumberPagination):
    """``{"count", "next", "previous", "results"}``; ``?page_size=`` up to 500 (more is
    read as 500); a ``page`` or ``page_size`` that is not a whole number from 1 is a 400,
    a page past the last a 404."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        raw = single_value(request, self.page_size_query_param)
        if raw is not None and not _positive(raw):
            raise ValidationError({self.page_size_query_param: ["A whole number from 1 is required."]})
        return super().get_page_size(request)

    def paginate_queryset(self, queryset, request, view=None):
        raw = single_value(request, self.page_query_param)
        if raw is not None and not _positive(raw) and raw not in self.last_page_strings:
            raise ValidationError({self.page_query_param: ["A whole number from 1 is required."]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] in (self.page_query_param, self.page_size_query_param):
                parameter["schema"]["minimum"] = 1
        return parameters
